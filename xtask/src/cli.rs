//! Flag value parsers shared by the subcommands. clap puts the flag's name before their errors
//! (`invalid value 'nope' for '--data <DIR>': nope does not exist`), and refuses the value before
//! any work starts.

use std::path::PathBuf;

/// A folder that exists.
pub fn existing_dir(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => Ok(path),
        Ok(_) => Err(format!("{value} is a file, not a folder")),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(format!("the folder {value} does not exist")),
        Err(err) => Err(format!("cannot read {value}: {err}")),
    }
}

/// `--data`: `synthetic-concepts[:SEED]` (a generated data set), else a folder that exists.
pub fn data_source(value: &str) -> Result<PathBuf, String> {
    match cvn_models::data::synthetic_concepts::parse_spec(value) {
        Some(Ok(_)) => Ok(PathBuf::from(value)),
        Some(Err(err)) => Err(err.to_string()),
        None => existing_dir(value),
    }
}

/// A count of at least 1 (batch sizes, passes, image limits).
pub fn at_least_one(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(err) => Err(format!("expected a whole number: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_must_exist_and_be_folders() {
        let dir = std::env::temp_dir();
        assert_eq!(existing_dir(dir.to_str().unwrap()).unwrap(), dir);
        assert_eq!(existing_dir("/no/such/folder").unwrap_err(), "the folder /no/such/folder does not exist");
        let file = dir.join(format!("xtask-cli-file-{}", std::process::id()));
        std::fs::write(&file, "x").unwrap();
        assert!(existing_dir(file.to_str().unwrap()).unwrap_err().contains("is a file"));
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn counts_start_at_one() {
        assert_eq!(at_least_one("3"), Ok(3));
        assert_eq!(at_least_one("0").unwrap_err(), "must be at least 1");
        assert!(at_least_one("-1").unwrap_err().starts_with("expected a whole number"));
    }
}
