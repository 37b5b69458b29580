//! The scheduling recipes under `deploy/` are well formed: JSON and YAML parse and say
//! what the README promises, cron lines have five time fields, every recipe runs the
//! binary with JSON logs and checks `status --check`, and `systemd-analyze verify`
//! accepts the units (where systemd is installed).

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
}

#[test]
fn ecs_task_and_schedule_parse() {
    let task: serde_json::Value = serde_json::from_str(&read("aws/ecs-task-definition.json")).expect("JSON");
    let cmd = task["containerDefinitions"][0]["command"]
        .as_array()
        .expect("command");
    assert_eq!(cmd[..3], ["--log-format", "json", "run"]);
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
