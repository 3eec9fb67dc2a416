//! `classify --cam OUT_DIR`: each image's class-activation map for its top class
//! ([`resnet_zoo::cam`]), upsampled to the crop, blended as a heat map over the crop the model
//! saw, written as `OUT_DIR/<stem>.<class>.png`.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::Tensor;
use resnet_zoo::cam::{self, Map};
use resnet_zoo::transforms::Preprocess;

use crate::cli::Usage;

/// Weight of the heat map in the blend (the crop gets the rest).
const ALPHA: f32 = 0.5;

/// Writes the maps of one run into one folder, a unique file name per input.
pub struct CamWriter {
    dir: PathBuf,
    /// Stems given out in this run: two inputs named `cat.jpg` in two folders get `cat` and `cat-2`.
    used: HashSet<OsString>,
}

impl CamWriter {
    /// Creates `dir` if needed; a path that is not a folder is a usage error (checked before the
    /// model loads).
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Usage(format!(
                "--cam {}: cannot create the folder for the maps: {e}; give a folder path",
                dir.display()
            ))
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            used: HashSet::new(),
        })
    }

    /// `stem`, or `stem-2`, `stem-3`, ... if an earlier input of this run had it.
    fn unique_stem(&mut self, stem: &OsStr) -> OsString {
        let mut candidate = stem.to_os_string();
        let mut n = 1;
        while !self.used.insert(candidate.clone()) {
            n += 1;
            candidate = stem.to_os_string();
            candidate.push(format!("-{n}"));
        }
        candidate
    }

    /// Writes the map of `class` (`[h, w]`, normalised) over `input` (the model input `[3, H, W]`
    /// made by `preprocess`) and returns the file's path.
    pub fn write(
        &mut self,
        stem: &OsStr,
        class: usize,
        input: &Tensor,
        map: &Map,
        preprocess: &Preprocess,
    ) -> anyhow::Result<PathBuf> {
        let mut name = self.unique_stem(stem);
        name.push(format!(".{class}.png"));
        let path = self.dir.join(name);
        let crop = cam::unnormalise(input, preprocess)?;
        let heat = cam::upsample_bilinear(map, crop.width, crop.height);
        let blended = cam::overlay(&crop, &heat, ALPHA)?;
        let png = encode_png(blended.width, blended.height, blended.data)?;
        resnet_zoo::fswrite::write_atomic(&path, &png).with_context(|| {
            format!(
                "--cam: cannot write the class-activation map {}",
                path.display()
            )
        })?;
        Ok(path)
    }
}

fn encode_png(width: usize, height: usize, data: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let size = |n: usize| u32::try_from(n).context("image side over 2^32");
    let image = image::RgbImage::from_raw(size(width)?, size(height)?, data)
        .context("a heat map with the wrong number of bytes")?;
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .context("encoding a class-activation map as PNG")?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn stems_are_unique_within_a_run() {
        let dir = std::env::temp_dir().join(format!("resnet-zoo-cam-unit-{}", std::process::id()));
        let mut w = CamWriter::create(&dir).unwrap();
        let got: Vec<OsString> = ["cat", "dog", "cat", "cat-2", "cat"]
            .iter()
            .map(|s| w.unique_stem(OsStr::new(s)))
            .collect();
        assert_eq!(got, ["cat", "dog", "cat-2", "cat-2-2", "cat-3"]);
        let file = dir.join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = CamWriter::create(&file).err().unwrap().to_string();
        assert!(err.starts_with("--cam ") && err.contains("file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
