//! The one AWS SDK configuration, shared by the S3 and Redshift Data API clients: the
//! standard chain (credentials, `AWS_REGION`, profiles, `AWS_ENDPOINT_URL_*`), with a
//! single HTTP stack (hyper 1 + rustls on ring) instead of the SDK defaults' two.

use aws_config::SdkConfig;
use aws_smithy_http_client::tls;

/// The shared configuration, loaded once (credentials and region are resolved once per
/// run). Only called when an AWS service is really used, so local runs need no AWS setup.
pub async fn sdk_config() -> SdkConfig {
    static SHARED: tokio::sync::OnceCell<SdkConfig> = tokio::sync::OnceCell::const_new();
    SHARED.get_or_init(load).await.clone()
}

async fn load() -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .retry_config(retry_config())
        .load()
        .await
}

/// Throttling and transient errors are retried with exponential backoff and jitter, up
/// to this many attempts per call: a scheduled load rides out a burst of throttling
/// instead of failing.
pub fn retry_config() -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::standard().with_max_attempts(6)
}
