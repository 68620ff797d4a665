//! The training dataset on disk: image embeddings of both CLIP towers, concatenated,
//! and the text-coded name of each identity.
//!
//! ```text
//! DIR/dataset.json             format, dims, identities (name, split, image count), shards, skipped images
//! DIR/names.safetensors        `names` [M, K, D] f32: the text-coded name of identity m
//! DIR/images-NNNNN.safetensors `image_embeds` [n, E] f32, `identity` [n] i64; metadata `paths` (JSON list)
//! ```
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::name_encoder::{InputCrop, SkippedImage};
use crate::{ModelError, Result};

/// Format tag of `dataset.json`.
pub const DATASET_FORMAT: &str = "magicnaming-dataset";

/// Train or validation (held-out people).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Used to fit the head.
    Train,
    /// Held-out identities.
    Val,
}

/// One person.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    /// Cleaned name.
    pub name: String,
    /// Split of this person.
    pub split: Split,
    /// Images kept for this person.
    pub images: usize,
}

/// One shard file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shard {
    /// File name inside the dataset folder.
    pub file: String,
    /// Rows in the shard.
    pub count: usize,
}

/// `dataset.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetIndex {
    /// Always [`DATASET_FORMAT`].
    pub format: String,
    /// Layout version.
    pub version: u32,
    /// `K`.
    pub num_tokens: usize,
    /// `D`.
    pub token_dim: usize,
    /// Widths of the concatenated image embeddings (e.g. [768, 1280]).
    pub embed_dims: Vec<usize>,
    /// People, in `names.safetensors` order.
    pub identities: Vec<Identity>,
    /// Embedding shards.
    pub shards: Vec<Shard>,
    /// Images that could not be used.
    #[serde(default)]
    pub skipped: Vec<SkippedImage>,
    /// The view of each photo that was embedded (absent: the whole photo).
    #[serde(default)]
    pub input_crop: InputCrop,
    /// Free-form provenance (model, towers, seed...).
    #[serde(default)]
    pub source: serde_json::Map<String, serde_json::Value>,
}

/// A dataset loaded in memory (embeddings are small: E floats per image).
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The folder.
    pub dir: PathBuf,
    /// Its index.
    pub index: DatasetIndex,
    /// `[M * K * D]`, row-major names.
    pub names: Vec<f32>,
    /// `[N * E]`, row-major image embeddings.
    pub embeds: Vec<f32>,
    /// `[N]`: identity of each image.
    pub identity: Vec<usize>,
}

fn read_tensor(
    path: &Path,
    bytes: &[u8],
    name: &str,
) -> Result<(Vec<u8>, Vec<usize>, safetensors::Dtype)> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| ModelError::weights(path, format!("not a safetensors file: {e}")))?;
    let v = st
        .tensor(name)
        .map_err(|_| ModelError::weights(path, format!("no tensor `{name}`")))?;
    Ok((v.data().to_vec(), v.shape().to_vec(), v.dtype()))
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl Dataset {
    /// Loads a dataset folder, checking every shape against `dataset.json`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let index_path = dir.join("dataset.json");
        let index: DatasetIndex = serde_json::from_value(crate::json::read_json(&index_path)?)
            .map_err(|e| ModelError::config(&index_path, e.to_string()))?;
        if index.format != DATASET_FORMAT {
            return Err(ModelError::config(
                &index_path,
                format!("format is {:?}, expected {DATASET_FORMAT:?}", index.format),
            ));
        }
        let (m, k, d) = (index.identities.len(), index.num_tokens, index.token_dim);
        let e: usize = index.embed_dims.iter().sum();
        let names_path = dir.join("names.safetensors");
        let bytes = std::fs::read(&names_path).map_err(|err| ModelError::io(&names_path, err))?;
        let (data, shape, dtype) = read_tensor(&names_path, &bytes, "names")?;
        if dtype != safetensors::Dtype::F32 || shape != [m, k, d] {
            return Err(ModelError::weights(
                &names_path,
                format!("`names` is {dtype:?} {shape:?}, expected F32 [{m}, {k}, {d}]"),
            ));
        }
        let names = f32s(&data);
        let (mut embeds, mut identity) = (Vec::new(), Vec::new());
        for shard in &index.shards {
            let p = dir.join(&shard.file);
            let bytes = std::fs::read(&p).map_err(|err| ModelError::io(&p, err))?;
            let (data, shape, dtype) = read_tensor(&p, &bytes, "image_embeds")?;
            if dtype != safetensors::Dtype::F32 || shape != [shard.count, e] {
                return Err(ModelError::weights(
                    &p,
                    format!(
                        "`image_embeds` is {dtype:?} {shape:?}, expected F32 [{}, {e}]",
                        shard.count
                    ),
                ));
            }
            embeds.extend(f32s(&data));
            let (data, shape, dtype) = read_tensor(&p, &bytes, "identity")?;
            if dtype != safetensors::Dtype::I64 || shape != [shard.count] {
                return Err(ModelError::weights(
                    &p,
                    format!(
                        "`identity` is {dtype:?} {shape:?}, expected I64 [{}]",
                        shard.count
                    ),
                ));
            }
            for c in data.chunks_exact(8) {
                let id = i64::from_le_bytes(c.try_into().expect("8 bytes"));
                if id < 0 || id as usize >= m {
                    return Err(ModelError::weights(
                        &p,
                        format!("identity {id} outside 0..{m}"),
                    ));
                }
                identity.push(id as usize);
            }
        }
        Ok(Self {
            dir,
            index,
            names,
            embeds,
            identity,
        })
    }

    /// `E`, width of one image embedding.
    pub fn embed_dim(&self) -> usize {
        self.index.embed_dims.iter().sum()
    }

    /// `K * D`, width of one flattened name.
    pub fn name_len(&self) -> usize {
        self.index.num_tokens * self.index.token_dim
    }

    /// Rows (images) whose identity is in `split`.
    pub fn rows(&self, split: Split) -> Vec<usize> {
        (0..self.identity.len())
            .filter(|&r| self.index.identities[self.identity[r]].split == split)
            .collect()
    }

    /// Identities in `split`.
    pub fn identities(&self, split: Split) -> Vec<usize> {
        (0..self.index.identities.len())
            .filter(|&i| self.index.identities[i].split == split)
            .collect()
    }

    /// Flattened image embeddings of `rows`.
    pub fn gather_embeds(&self, rows: &[usize]) -> Vec<f32> {
        let e = self.embed_dim();
        rows.iter()
            .flat_map(|&r| self.embeds[r * e..(r + 1) * e].iter().copied())
            .collect()
    }

    /// Flattened names of the identities of `rows`.
    pub fn gather_names(&self, rows: &[usize]) -> Vec<f32> {
        let n = self.name_len();
        rows.iter()
            .flat_map(|&r| {
                let i = self.identity[r];
                self.names[i * n..(i + 1) * n].iter().copied()
            })
            .collect()
    }
}

/// Writes a dataset folder: names once, embeddings in shards, the index last (so a folder
/// without `dataset.json` is visibly incomplete).
#[derive(Debug)]
pub struct DatasetWriter {
    dir: PathBuf,
    shard_rows: usize,
    pending_embeds: Vec<f32>,
    pending_identity: Vec<i64>,
    pending_paths: Vec<String>,
    /// The index being built.
    pub index: DatasetIndex,
}

impl DatasetWriter {
    /// Starts a dataset in `dir` (created if needed).
    pub fn new(
        dir: impl AsRef<Path>,
        num_tokens: usize,
        token_dim: usize,
        embed_dims: Vec<usize>,
        shard_rows: usize,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| ModelError::io(&dir, e))?;
        Ok(Self {
            dir,
            shard_rows: shard_rows.max(1),
            pending_embeds: Vec::new(),
            pending_identity: Vec::new(),
            pending_paths: Vec::new(),
            index: DatasetIndex {
                format: DATASET_FORMAT.into(),
                version: 1,
                num_tokens,
                token_dim,
                embed_dims,
                identities: Vec::new(),
                shards: Vec::new(),
                skipped: Vec::new(),
                input_crop: InputCrop::WholeImage,
                source: Default::default(),
            },
        })
    }

    /// Writes `names.safetensors` ([M, K, D], identities in `index.identities` order).
    pub fn write_names(&mut self, names: &[f32]) -> Result<()> {
        let (m, k, d) = (
            self.index.identities.len(),
            self.index.num_tokens,
            self.index.token_dim,
        );
        if names.len() != m * k * d {
            return Err(ModelError::InvalidInput(format!(
                "{} name values for [{m}, {k}, {d}]",
                names.len()
            )));
        }
        let bytes: Vec<u8> = names.iter().flat_map(|v| v.to_le_bytes()).collect();
        write_safetensors(
            &self.dir.join("names.safetensors"),
            vec![("names", safetensors::Dtype::F32, vec![m, k, d], bytes)],
            None,
        )
    }

    /// Adds one image's embedding.
    pub fn push(&mut self, embed: &[f32], identity: usize, path: &str) -> Result<()> {
        let e: usize = self.index.embed_dims.iter().sum();
        if embed.len() != e {
            return Err(ModelError::InvalidInput(format!(
                "embedding of {} values, expected {e}",
                embed.len()
            )));
        }
        self.pending_embeds.extend_from_slice(embed);
        self.pending_identity.push(identity as i64);
        self.pending_paths.push(path.to_string());
        if self.pending_identity.len() >= self.shard_rows {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the pending rows as one shard.
    pub fn flush(&mut self) -> Result<()> {
        let n = self.pending_identity.len();
        if n == 0 {
            return Ok(());
        }
        let e: usize = self.index.embed_dims.iter().sum();
        let file = format!("images-{:05}.safetensors", self.index.shards.len());
        let embeds: Vec<u8> = self
            .pending_embeds
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let ids: Vec<u8> = self
            .pending_identity
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let paths = serde_json::to_string(&self.pending_paths).expect("strings serialise");
        write_safetensors(
            &self.dir.join(&file),
            vec![
                ("image_embeds", safetensors::Dtype::F32, vec![n, e], embeds),
                ("identity", safetensors::Dtype::I64, vec![n], ids),
            ],
            Some(("paths", paths)),
        )?;
        self.index.shards.push(Shard { file, count: n });
        self.pending_embeds.clear();
        self.pending_identity.clear();
        self.pending_paths.clear();
        Ok(())
    }

    /// Flushes and writes `dataset.json`.
    pub fn finish(mut self) -> Result<DatasetIndex> {
        self.flush()?;
        let json = serde_json::to_vec_pretty(&self.index).expect("index serialises");
        magicnaming_core::write_atomic(&self.dir.join("dataset.json"), &json)?;
        Ok(self.index)
    }
}

/// Writes tensors atomically.
pub fn write_safetensors(
    path: &Path,
    tensors: Vec<(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)>,
    meta: Option<(&str, String)>,
) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(n, d, s, b)| {
            safetensors::tensor::TensorView::new(*d, s.clone(), b).map(|v| (n.to_string(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| ModelError::weights(path, e.to_string()))?;
    let meta = meta.map(|(k, v)| [(k.to_string(), v)].into_iter().collect());
    let bytes = safetensors::serialize(views, meta)
        .map_err(|e| ModelError::weights(path, e.to_string()))?;
    Ok(magicnaming_core::write_atomic(path, &bytes)?)
}
