//! Embeds every file under sql/<dialect>/migrations/ into the binary, so `migrate`
//! needs no files at run time and a new migration needs no code change. Names are
//! validated at run time (`migrate::parse_name`), where the error can say what to fix.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    // Read when the script runs, not baked in when it was compiled: a build script
    // binary reused for a checkout at another path would read that path's files.
    let manifest_dir = match std::env::var("CARGO_MANIFEST_DIR") {
        Ok(d) => d,
        Err(e) => panic!("cargo sets CARGO_MANIFEST_DIR for build scripts: {e}"),
    };
    let root = Path::new(&manifest_dir).join("sql");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut out = String::new();
    for dialect in ["postgres", "redshift"] {
        let dir = root.join(dialect).join("migrations");
        println!("cargo:rerun-if-changed={}", dir.display());
        // A missing directory is a broken checkout: a binary without migrations would
        // refuse every database it meets.
        let mut files: Vec<_> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd.filter_map(Result::ok).map(|e| e.path()).collect(),
            Err(e) => panic!("cannot read {}: {e}", dir.display()),
        };
        files.sort();
        let _ = writeln!(
            out,
            "pub(crate) const {}: &[(&str, &str)] = &[",
            dialect.to_uppercase()
        );
        for f in files {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    ({name:?}, include_str!({:?})),",
                f.display().to_string()
            );
        }
        let _ = writeln!(out, "];");
    }
    commit(Path::new(&manifest_dir));
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into())).join("migrations.rs");
    if let Err(e) = std::fs::write(&dest, out) {
        panic!("cannot write {}: {e}", dest.display());
    }
}

/// `EVENTS_ETL_COMMIT` for `--version`: the commit the binary was built from, from git
/// when the checkout has it, else from the environment variable of that name (a build
/// from a source archive can pass it), else `unknown`.
fn commit(root: &Path) {
    println!("cargo:rerun-if-env-changed=EVENTS_ETL_COMMIT");
    // Watched only where they exist: a missing file would rerun this script every build.
    let git = root.join(".git");
    let watch = |p: std::path::PathBuf| {
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    };
    watch(git.join("HEAD"));
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD")) {
        if let Some(reference) = head.trim().strip_prefix("ref: ") {
            watch(git.join(reference));
            watch(git.join("packed-refs"));
        }
    }
    let from_git = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let commit = from_git
        .or_else(|| std::env::var("EVENTS_ETL_COMMIT").ok())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=EVENTS_ETL_COMMIT={commit}");
}
