//! The checkpoint loader on arbitrary bytes: any input is a checkpoint or an error, never a panic,
//! an abort or an allocation beyond what the bytes hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("fuzz-checkpoint-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("checkpoint.safetensors");
    if std::fs::write(&path, data).is_ok() {
        let _ = cvn_models::Model::load(&path);
    }
    let _ = cvn_autograd::io::TensorFile::from_bytes(data);
});
