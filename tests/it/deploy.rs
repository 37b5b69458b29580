//! The scheduling recipes under `deploy/` are well formed: JSON and YAML parse and say
//! what the README promises, cron lines have five time fields, every recipe runs the
//! binary with JSON logs and checks `status --check`, and keeps its outputs, and
//! `systemd-analyze verify` accepts the units (where systemd is installed). The
//! Dockerfile builds what the recipes run (built for real where a Docker daemon
//! answers), and the AWS policies and the staging lifecycle rule parse and say what the
//! README's IAM table says.

use std::path::{Path, PathBuf};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy().join(rel)).unwrap_or_else(|e| panic!("deploy/{rel}: {e}"))
}

#[test]
fn cron_lines_are_well_formed() {
    let text = read("cron");
    let jobs: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.contains('='))
        .collect();
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    for job in &jobs {
        let fields: Vec<&str> = job.split_whitespace().collect();
        assert!(fields.len() > 7, "{job}");
        for f in &fields[..5] {
            assert!(
                f.chars().all(|c| c.is_ascii_digit() || "*/,-".contains(c)),
                "time field {f:?} in {job}"
            );
        }
        assert_eq!(fields[5], "etl", "user field in {job}");
    }
    assert!(
        jobs[0].contains("events-etl --log-format json run --metrics-file"),
        "{}",
        jobs[0]
    );
    assert!(jobs[1].contains("events-etl status --check"), "{}", jobs[1]);
}

#[test]
fn kubernetes_cronjobs_parse_and_forbid_overlap() {
    let docs = yaml_rust2::YamlLoader::load_from_str(&read("kubernetes/cronjob.yaml")).expect("YAML parses");
    assert_eq!(docs.len(), 2);
    let mut args = Vec::new();
    for d in &docs {
        assert_eq!(d["kind"].as_str(), Some("CronJob"));
        assert_eq!(d["spec"]["concurrencyPolicy"].as_str(), Some("Forbid"));
        let c = &d["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
        let a: Vec<&str> = c["args"]
            .as_vec()
            .expect("args")
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        assert_eq!(&a[..2], ["--log-format", "json"], "{a:?}");
        args.push(a.join(" "));
    }
    assert!(args[0].contains("run --metrics-file"), "{args:?}");
    assert!(args[1].contains("status --check"), "{args:?}");
    // The metrics go where node_exporter's textfile collector reads them, on the node.
    let volumes = docs[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
        .as_vec()
        .expect("volumes");
    let metrics = volumes
        .iter()
        .find(|v| v["name"].as_str() == Some("metrics"))
        .expect("a metrics volume");
    assert_eq!(
        metrics["hostPath"]["path"].as_str(),
        Some("/var/lib/node_exporter/textfile_collector"),
        "{metrics:?}"
    );
}

#[test]
fn ecs_task_and_schedule_parse() {
    let task: serde_json::Value = serde_json::from_str(&read("aws/ecs-task-definition.json")).expect("JSON");
    let cmd = task["containerDefinitions"][0]["command"]
        .as_array()
        .expect("command");
    assert_eq!(cmd[..3], ["--log-format", "json", "run"]);
    // The report goes to stdout, which the awslogs driver keeps; no file is lost with
    // the task.
    assert_eq!(cmd[3..5], ["--report-json", "-"], "{cmd:?}");
    let check: serde_json::Value =
        serde_json::from_str(&read("aws/eventbridge-schedule-check.json")).expect("JSON");
    let input: serde_json::Value =
        serde_json::from_str(check["Target"]["Input"].as_str().expect("Input")).expect("Input JSON");
    let command = input["containerOverrides"][0]["command"]
        .as_array()
        .expect("command");
    assert_eq!(command[2..4], ["status", "--check"], "{command:?}");
    let schedule: serde_json::Value =
        serde_json::from_str(&read("aws/eventbridge-schedule.json")).expect("JSON");
    assert_eq!(schedule["ScheduleExpression"], "rate(15 minutes)");
    assert!(schedule["Target"]["EcsParameters"]["TaskDefinitionArn"]
        .as_str()
        .is_some_and(|a| a.ends_with("task-definition/events-etl")));
}

#[test]
fn systemd_units_verify() {
    let units = [
        "events-etl.service",
        "events-etl.timer",
        "events-etl-check.service",
        "events-etl-check.timer",
    ];
    for u in units {
        let text = read(&format!("systemd/{u}"));
        assert!(!text.contains("\t"), "{u}");
        if u.ends_with(".service") {
            assert!(text.contains("ExecStart=/usr/local/bin/events-etl "), "{u}");
        }
    }
    assert!(read("systemd/events-etl.service").contains("--log-format json run --metrics-file"));
    assert!(read("systemd/events-etl-check.service").contains("status --check"));
    let Ok(probe) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("systemd-analyze is not installed: the units were checked as text only");
        return;
    };
    assert!(probe.status.success());
    // Verify copies whose ExecStart names the binary cargo built (it is not installed).
    let dir = tempfile::tempdir().unwrap();
    let bin = crate::support::bin();
    for u in units {
        let text =
            read(&format!("systemd/{u}")).replace("/usr/local/bin/events-etl", &bin.display().to_string());
        std::fs::write(dir.path().join(u), text).unwrap();
    }
    let paths: Vec<PathBuf> = units.iter().map(|u| dir.path().join(u)).collect();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .expect("systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

#[test]
fn aws_policies_and_staging_lifecycle_parse() {
    let json = |rel: &str| -> serde_json::Value {
        serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    let actions = |policy: &serde_json::Value| -> Vec<String> {
        policy["Statement"]
            .as_array()
            .expect("Statement")
            .iter()
            .flat_map(|s| match &s["Action"] {
                serde_json::Value::Array(a) => {
                    a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()
                }
                serde_json::Value::String(a) => vec![a.clone()],
                _ => vec![],
            })
            .collect()
    };
    let task = actions(&json("aws/task-role-policy.json"));
    for a in [
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "kms:Decrypt",
        "redshift-data:ExecuteStatement",
        "redshift-data:BatchExecuteStatement",
        "redshift-data:DescribeStatement",
        "redshift-data:GetStatementResult",
        "redshift-data:CancelStatement",
        "redshift:GetClusterCredentials",
    ] {
        assert!(task.iter().any(|t| t == a), "task role lacks {a}: {task:?}");
    }
    let copy = actions(&json("aws/copy-role-policy.json"));
    assert!(copy.contains(&"s3:GetObject".to_owned()) && copy.contains(&"s3:ListBucket".to_owned()));
    let trust = json("aws/copy-role-trust-policy.json");
    assert_eq!(trust["Statement"][0]["Action"], "sts:AssumeRole");
    assert!(trust["Statement"][0]["Principal"]["Service"]
        .as_array()
        .is_some_and(|s| s.iter().any(|p| p == "redshift.amazonaws.com")));
    let lifecycle = json("aws/staging-lifecycle.json");
    let rule = &lifecycle["Rules"][0];
    assert_eq!(rule["Status"], "Enabled");
    assert_eq!(rule["Filter"]["Prefix"], "staging/");
    assert_eq!(rule["Expiration"]["Days"], 7);
}

/// The Dockerfile builds the binary with the locked dependencies in one stage and runs
/// it as a non-root user on a slim base with CA certificates; the recipes run the image
/// it builds (their arguments start with the binary's own flags: it is the entrypoint).
/// Where a Docker daemon answers, the image is built and its `--version` run.
#[test]
fn the_dockerfile_builds_what_the_recipes_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    let instructions: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty() && !l.starts_with(' '))
        .collect();
    let froms: Vec<&&str> = instructions.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "two stages: {froms:?}");
    assert!(
        text.contains("cargo build --release --locked --bin events-etl"),
        "{text}"
    );
    assert!(text.contains("ca-certificates"), "{text}");
    assert!(
        instructions
            .iter()
            .any(|l| l.starts_with("USER ") && !l.contains("root") && *l != "USER 0"),
        "a non-root user: {instructions:?}"
    );
    assert!(
        text.contains("ENTRYPOINT [\"/usr/local/bin/events-etl\"]"),
        "{text}"
    );
    for copied in ["Cargo.toml", "Cargo.lock", "build.rs", "src", "sql", "benches"] {
        assert!(text.contains(copied) && root.join(copied).exists(), "{copied}");
    }
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).expect(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target"), "{ignore}");
    // The recipes run this image: its entrypoint is the binary, so they pass flags.
    let task: serde_json::Value = serde_json::from_str(&read("aws/ecs-task-definition.json")).unwrap();
    assert!(task["containerDefinitions"][0]["image"]
        .as_str()
        .is_some_and(|i| i.contains("/events-etl:")));
    assert!(read("kubernetes/cronjob.yaml").contains("/events-etl:"));

    let daemon = std::process::Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if !daemon {
        eprintln!("no Docker daemon answers here: the Dockerfile was checked as text, not built");
        return;
    }
    let tag = format!("events-etl-test:{}", std::process::id());
    let built = std::process::Command::new("docker")
        .args(["build", "--quiet", "-t", &tag, "."])
        .current_dir(root)
        .output()
        .expect("docker build");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let run = std::process::Command::new("docker")
        .args(["run", "--rm", &tag, "--version"])
        .output()
        .expect("docker run");
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &tag])
        .output();
    assert!(
        String::from_utf8_lossy(&run.stdout).starts_with("events-etl "),
        "{run:?}"
    );
}

/// Every recipe's arguments are ones the binary accepts: clap checks each flag and value
/// (`--max-duration 12m` included) before it answers `--help`, so a misspelled flag or
/// a bad value fails here and not on the schedule.
#[test]
fn every_recipes_arguments_parse_with_the_binary() {
    let mut lists: Vec<Vec<String>> = Vec::new();
    let after_binary = |line: &str| -> Option<Vec<String>> {
        let rest = line.split_once("/usr/local/bin/events-etl ")?.1;
        // The shell's part starts at the first redirection or operator.
        Some(
            rest.split_whitespace()
                .take_while(|w| !w.starts_with(['>', '|', '&']) && !w.starts_with("2>"))
                .map(str::to_owned)
                .collect(),
        )
    };
    lists.extend(
        read("cron")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(after_binary),
    );
    for unit in ["systemd/events-etl.service", "systemd/events-etl-check.service"] {
        lists.extend(
            read(unit)
                .lines()
                .filter(|l| l.starts_with("ExecStart="))
                .filter_map(after_binary),
        );
    }
    for d in yaml_rust2::YamlLoader::load_from_str(&read("kubernetes/cronjob.yaml")).expect("YAML") {
        let c = &d["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
        let args = c["args"].as_vec().expect("args");
        lists.push(
            args.iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect(),
        );
    }
    let task: serde_json::Value = serde_json::from_str(&read("aws/ecs-task-definition.json")).expect("JSON");
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .expect("an array")
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect()
    };
    lists.push(strings(&task["containerDefinitions"][0]["command"]));
    let check: serde_json::Value =
        serde_json::from_str(&read("aws/eventbridge-schedule-check.json")).expect("JSON");
    let input: serde_json::Value =
        serde_json::from_str(check["Target"]["Input"].as_str().expect("Input")).expect("Input JSON");
    lists.push(strings(&input["containerOverrides"][0]["command"]));

    assert_eq!(lists.len(), 8, "two per recipe: {lists:?}");
    let runs = lists.iter().filter(|a| a.iter().any(|x| x == "run")).count();
    assert_eq!(runs, 4, "{lists:?}");
    for args in &lists {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_events-etl"))
            .args(args)
            .arg("--help")
            .output()
            .expect("the binary runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if args.iter().any(|x| x == "run") {
            assert!(
                args.windows(2).any(|w| w[0] == "--max-duration"),
                "a scheduled run is bounded to finish before the next starts: {args:?}"
            );
        }
    }
}
