//! Dissect cache entries: any bytes at an entry's place are a verified entry or a miss.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = dissect::cache::CacheKey::new("activations").with("layer", "head");
    let _ = dissect::cache::parse_entry(data, &key, std::path::Path::new("entry.safetensors"));
});
