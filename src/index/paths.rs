//! Paths in index files, stored losslessly, and what a non-regular file is.

use std::path::{Path, PathBuf};

/// The bytes of a path as the file system has them (Unix); elsewhere its UTF-8 form.
pub fn path_bytes(path: &Path) -> std::borrow::Cow<'_, [u8]> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        std::borrow::Cow::Borrowed(path.as_os_str().as_bytes())
    }
    #[cfg(not(unix))]
    {
        match path.to_string_lossy() {
            std::borrow::Cow::Borrowed(s) => std::borrow::Cow::Borrowed(s.as_bytes()),
            std::borrow::Cow::Owned(s) => std::borrow::Cow::Owned(s.into_bytes()),
        }
    }
}

/// A path as JSON: a string when it is UTF-8, else `{"bytes": "HEX"}`.
pub(super) fn path_to_json(path: &Path) -> serde_json::Value {
    match path.to_str() {
        Some(s) => serde_json::Value::String(s.to_string()),
        None => {
            let hex: String = path_bytes(path)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            serde_json::json!({ "bytes": hex })
        }
    }
}

/// The inverse of [`path_to_json`].
pub(super) fn path_from_json(value: &serde_json::Value) -> Result<PathBuf, String> {
    if let Some(s) = value.as_str() {
        return Ok(PathBuf::from(s));
    }
    let hex = value
        .get("bytes")
        .and_then(|h| h.as_str())
        .ok_or_else(|| format!("a path must be a string or {{\"bytes\": HEX}}, not {value}"))?;
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| format!("path bytes {hex:?} are not hexadecimal"))?;
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
    }
    #[cfg(not(unix))]
    {
        String::from_utf8(bytes)
            .map(PathBuf::from)
            .map_err(|_| "a path that is not UTF-8 cannot be opened on this platform".into())
    }
}

/// What a file that is not a regular file is, in words.
pub use resnet_zoo_resnet::fsread::file_kind;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[cfg(unix)]
    #[test]
    fn paths_that_are_not_utf8_round_trip_byte_for_byte() {
        use std::os::unix::ffi::OsStringExt;
        for raw in [
            &b"dir/caf\xe9.jpg"[..],
            b"\xff\xfe",
            b"a\nb\t\\c.jpg",
            b"plain.jpg",
        ] {
            let path = PathBuf::from(std::ffi::OsString::from_vec(raw.to_vec()));
            let json = path_to_json(&path);
            assert_eq!(json.is_string(), std::str::from_utf8(raw).is_ok(), "{json}");
            assert_eq!(path_from_json(&json).unwrap(), path);
        }
        assert!(path_from_json(&serde_json::json!({"bytes": "zz"})).is_err());
        assert!(path_from_json(&serde_json::json!(3)).is_err());
    }
}
