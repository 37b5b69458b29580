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
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into())).join("migrations.rs");
    if let Err(e) = std::fs::write(&dest, out) {
        panic!("cannot write {}: {e}", dest.display());
    }
}
