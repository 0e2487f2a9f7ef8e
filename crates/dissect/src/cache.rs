//! A content-addressed cache of computed matrices (recorded activations, CLIP embeddings).
//!
//! An entry's file name is the sha256 of everything its content depends on — for activations the
//! checkpoint bytes' hash, the layer, the probe set, the pooling and the sampling mode — so a changed
//! input can never be served a stale entry (CLIP-Dissect reuses any file with the right *name*).
//! The full key is stored in the file too and checked on reading, and so is the content hash of
//! the data (`cvn_autograd::io::verify`): an unreadable, mismatched, altered or unhashed entry counts
//! as a miss and is recomputed and rewritten (atomically and durably).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ndarray::Array2;
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};

use crate::error::{DissectError, Result};
use crate::tensor_file::{read_matrix, serialize};

/// Bumped when the layout of entries changes, so old entries are never misread.
const FORMAT: &str = "dissect-cache-v2";

/// What an entry depends on, as ordered `name=value` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    fields: Vec<(String, String)>,
}

impl CacheKey {
    /// A key for entries of one kind (`activations`, `clip-images`, …).
    pub fn new(kind: &str) -> Self {
        Self { fields: vec![("format".into(), FORMAT.into()), ("kind".into(), kind.into())] }
    }

    /// Adds a field the content depends on.
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.fields.push((name.to_string(), value.into()));
        self
    }

    /// The fields, one `name=value` line each (values are escaped so lines cannot be forged).
    pub fn canonical(&self) -> String {
        self.fields.iter().map(|(k, v)| format!("{k}={}\n", v.escape_default())).collect()
    }

    /// Hex sha256 of [`CacheKey::canonical`]: the entry's file name.
    pub fn digest(&self) -> String {
        hex_sha256(self.canonical().as_bytes())
    }
}

/// Hex-encoded sha256 of some bytes (checkpoint and weight fingerprints use it too).
pub fn hex_sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex sha256 of a file's bytes, streamed.
pub fn file_sha256(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|err| DissectError::io(path, err))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(|err| DissectError::io(path, err))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// An entry's matrices from its file's bytes, if the stored key is `key` and the content hash
/// matches (entries without a hash, from before entries carried one, are misses too).
pub fn parse_entry(bytes: &[u8], key: &CacheKey, path: &Path) -> Option<Entry> {
    if cvn_autograd::io::verify(bytes).ok()? != cvn_autograd::io::Integrity::Verified {
        return None;
    }
    let file = SafeTensors::deserialize(bytes).ok()?;
    let (_, header) = SafeTensors::read_metadata(bytes).ok()?;
    let stored_key = header.metadata().as_ref()?.get("key")?;
    if *stored_key != key.canonical() {
        return None;
    }
    file.names().into_iter().map(|name| read_matrix(&file, name, path).ok().map(|m| (name.to_string(), m))).collect()
}

/// Named matrices stored under one key.
pub type Entry = BTreeMap<String, Array2<f32>>;

/// The cache directory, or none (`--no-cache`): then every lookup misses and nothing is written.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: Option<PathBuf>,
}

impl Cache {
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: Some(dir.into()) }
    }

    pub fn disabled() -> Self {
        Self { dir: None }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    fn path(&self, key: &CacheKey) -> Option<PathBuf> {
        self.dir.as_ref().map(|dir| dir.join(format!("{}.safetensors", key.digest())))
    }

    /// The entry under `key`, if present and intact (its key and content hash match).
    pub fn load(&self, key: &CacheKey) -> Option<Entry> {
        let path = self.path(key)?;
        let bytes = std::fs::read(&path).ok()?;
        parse_entry(&bytes, key, &path)
    }

    /// Stores `entry` under `key` (written to a temporary file, synced, then renamed, so readers
    /// never see half an entry).
    pub fn store(&self, key: &CacheKey, entry: &Entry) -> Result<()> {
        let (Some(dir), Some(path)) = (&self.dir, self.path(key)) else {
            return Ok(());
        };
        std::fs::create_dir_all(dir).map_err(|err| DissectError::io(dir, err))?;
        let tensors: Vec<(&str, &Array2<f32>)> = entry.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let metadata = HashMap::from([("key".to_string(), key.canonical())]);
        let bytes = serialize(&tensors, metadata, &path)?;
        cvn_autograd::io::write_atomically(&path, &bytes).map_err(|err| DissectError::format(&path, err.to_string()))
    }

    /// Removes the temporary files of writers that were killed (the caller holds the run's lock).
    pub fn remove_stale_temps(&self) -> Result<usize> {
        let Some(dir) = &self.dir else { return Ok(0) };
        cvn_autograd::io::remove_stale_temps(dir).map_err(|err| DissectError::format(dir, err.to_string()))
    }

    /// The entry under `key`, computing and storing it on a miss.
    pub fn get_or_compute(&self, key: &CacheKey, compute: impl FnOnce() -> Result<Entry>) -> Result<(Entry, bool)> {
        if let Some(entry) = self.load(key) {
            return Ok((entry, true));
        }
        let entry = compute()?;
        self.store(key, &entry)?;
        Ok((entry, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dissect-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn entry(value: f32) -> Entry {
        Entry::from([("activations".to_string(), Array2::from_elem((3, 2), value))])
    }

    #[test]
    fn hits_only_for_the_same_key_and_survives_reload() {
        let dir = scratch("hits");
        let cache = Cache::at(&dir);
        let key = CacheKey::new("activations").with("model", "abc").with("layer", "head");
        let (first, hit) = cache.get_or_compute(&key, || Ok(entry(1.0))).unwrap();
        assert!(!hit);
        let (second, hit) = cache.get_or_compute(&key, || panic!("must not recompute")).unwrap();
        assert!(hit);
        assert_eq!(first, second);
        // Any changed field is another entry.
        let other = CacheKey::new("activations").with("model", "abd").with("layer", "head");
        let (third, hit) = cache.get_or_compute(&other, || Ok(entry(2.0))).unwrap();
        assert!(!hit);
        assert_eq!(third["activations"][[0, 0]], 2.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_or_foreign_entries_are_misses() {
        let dir = scratch("corrupt");
        let cache = Cache::at(&dir);
        let key = CacheKey::new("activations").with("layer", "a");
        cache.store(&key, &entry(1.0)).unwrap();
        let path = dir.join(format!("{}.safetensors", key.digest()));
        std::fs::write(&path, b"not a safetensors file").unwrap();
        assert!(cache.load(&key).is_none());
        // An entry written under another key but sitting at this key's name is rejected too.
        let other = CacheKey::new("activations").with("layer", "b");
        cache.store(&other, &entry(3.0)).unwrap();
        std::fs::copy(dir.join(format!("{}.safetensors", other.digest())), &path).unwrap();
        assert!(cache.load(&key).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn entries_with_altered_data_are_recomputed_and_rewritten() {
        let dir = scratch("altered");
        let cache = Cache::at(&dir);
        let key = CacheKey::new("activations").with("layer", "head");
        let path = dir.join(format!("{}.safetensors", key.digest()));
        cache.store(&key, &entry(1.5)).unwrap();
        let good = std::fs::read(&path).unwrap();
        // The data is the file's tail: zero it, flip a bit, or make a value NaN; the key still matches.
        let n = good.len();
        let zeroed = [&good[..n - 24], &[0u8; 24][..]].concat();
        let mut flipped = good.clone();
        flipped[n - 5] ^= 0x08;
        let mut nan = good.clone();
        nan[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
        for bad in [zeroed, flipped, nan] {
            std::fs::write(&path, &bad).unwrap();
            assert!(cache.load(&key).is_none(), "an altered entry was served");
            let (value, hit) = cache.get_or_compute(&key, || Ok(entry(1.5))).unwrap();
            assert!(!hit);
            assert_eq!(value["activations"][[2, 1]], 1.5);
            // Rewritten: the file verifies again and holds the recomputed data. (Not compared byte
            // for byte: safetensors writes its metadata map in hash-map order.)
            assert_ne!(std::fs::read(&path).unwrap(), bad, "the altered entry was left in place");
            assert_eq!(cache.load(&key).expect("the rewritten entry verifies")["activations"], entry(1.5)["activations"]);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_fuzz_seed_entry_written_independently_verifies() {
        // fuzz/corpus/dissect_cache/entry was written by a short Python script following the
        // documented hash (cvn_autograd::io::CONTENT_HASH_KEY), not by this code.
        let bytes = include_bytes!("../../../fuzz/corpus/dissect_cache/entry");
        let key = CacheKey::new("activations").with("layer", "head");
        let entry = parse_entry(bytes, &key, Path::new("entry")).expect("the seed entry verifies");
        assert_eq!(entry["activations"], Array2::from_elem((3, 2), 1.5f32));
    }

    #[test]
    fn stale_temporary_entries_are_removed() {
        let dir = scratch("stale");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".abc.safetensors.tmp-777"), b"half").unwrap();
        assert_eq!(Cache::at(&dir).remove_stale_temps().unwrap(), 1);
        assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn disabled_cache_always_computes_and_writes_nothing() {
        let cache = Cache::disabled();
        let key = CacheKey::new("x");
        let mut calls = 0;
        for _ in 0..2 {
            let (_, hit) = cache
                .get_or_compute(&key, || {
                    calls += 1;
                    Ok(entry(0.0))
                })
                .unwrap();
            assert!(!hit);
        }
        assert_eq!(calls, 2);
    }

    #[test]
    fn fields_cannot_be_forged_with_newlines() {
        let a = CacheKey::new("k").with("layer", "x\nprobe=y");
        let b = CacheKey::new("k").with("layer", "x").with("probe", "y");
        assert_ne!(a.digest(), b.digest());
    }
}
