//! Embeds every file under sql/<dialect>/migrations/ into the binary, so `migrate`
//! needs no files at run time and a new migration needs no code change. Names are
//! validated at run time (`migrate::parse_name`), where the error can say what to fix.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut out = String::new();
    for dialect in ["postgres", "redshift"] {
        let dir = root.join(dialect).join("migrations");
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        let _ = writeln!(out, "pub const {}: &[(&str, &str)] = &[", dialect.to_uppercase());
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
