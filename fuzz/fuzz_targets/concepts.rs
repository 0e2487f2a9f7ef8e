//! Concept files: line and size limits, cleaning, deduplication.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("fuzz-concepts-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("concepts.txt");
    if std::fs::write(&path, data).is_ok() {
        if let Ok(set) = dissect::ConceptSet::from_file(&path) {
            let _ = set.find("T-shirt/top");
        }
    }
});
