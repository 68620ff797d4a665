//! The tensors of one module's update (LoRA / LoCon, LoHa, LoKr): the part suffixes,
//! the kinds they make up, and the checks that a module's parts fit together.
use std::collections::BTreeMap;

use crate::weights::SafetensorsFile;
use crate::{ModelError, Result};

fn err(path: &std::path::Path, message: String) -> ModelError {
    ModelError::weights(path, message)
}

/// One tensor of a module's update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// LoRA down (`lora_down`, `lora_A`, `lora.down`): `[r, in, (kh, kw)]`.
    Down,
    /// LoRA up (`lora_up`, `lora_B`, `lora.up`): `[out, r, (1, 1)]`.
    Up,
    /// The scalar alpha.
    Alpha,
    /// DoRA magnitude.
    DoraScale,
    /// LoHa factors.
    HadaW1A,
    /// LoHa factors.
    HadaW1B,
    /// LoHa factors.
    HadaW2A,
    /// LoHa factors.
    HadaW2B,
    /// LoHa Tucker cores.
    HadaT1,
    /// LoHa Tucker cores.
    HadaT2,
    /// LoKr first factor, whole.
    LokrW1,
    /// LoKr first factor, low-rank.
    LokrW1A,
    /// LoKr first factor, low-rank.
    LokrW1B,
    /// LoKr second factor, whole.
    LokrW2,
    /// LoKr second factor, low-rank.
    LokrW2A,
    /// LoKr second factor, low-rank.
    LokrW2B,
    /// LoKr Tucker core of the second factor.
    LokrT2,
}

/// The part suffixes of tensor keys.
pub const PARTS: &[(&str, Part)] = &[
    (".lora_down.weight", Part::Down),
    (".lora_up.weight", Part::Up),
    (".lora_A.weight", Part::Down),
    (".lora_B.weight", Part::Up),
    (".lora.down.weight", Part::Down),
    (".lora.up.weight", Part::Up),
    (".alpha", Part::Alpha),
    (".dora_scale", Part::DoraScale),
    (".hada_w1_a", Part::HadaW1A),
    (".hada_w1_b", Part::HadaW1B),
    (".hada_w2_a", Part::HadaW2A),
    (".hada_w2_b", Part::HadaW2B),
    (".hada_t1", Part::HadaT1),
    (".hada_t2", Part::HadaT2),
    (".lokr_w1", Part::LokrW1),
    (".lokr_w1_a", Part::LokrW1A),
    (".lokr_w1_b", Part::LokrW1B),
    (".lokr_w2", Part::LokrW2),
    (".lokr_w2_a", Part::LokrW2A),
    (".lokr_w2_b", Part::LokrW2B),
    (".lokr_t2", Part::LokrT2),
];

/// The kind of update a module carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LoraKind {
    /// `up @ down` (LoCon when `down` is a convolution).
    Lora,
    /// LyCORIS LoHa: `(w1a @ w1b) * (w2a @ w2b)`.
    LoHa,
    /// LyCORIS LoKr: `kron(w1, w2)`.
    LoKr,
}

impl LoraKind {
    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Lora => "LoRA",
            Self::LoHa => "LoHa",
            Self::LoKr => "LoKr",
        }
    }
}

/// Shape of one part, which must exist.
fn shape(file: &SafetensorsFile, key: &str) -> Vec<usize> {
    file.entry(key).map(|e| e.shape.clone()).unwrap_or_default()
}

/// Checks that a module's parts fit one kind; returns the kind and the rank alpha is
/// divided by.
pub fn check_parts(
    file: &SafetensorsFile,
    module: &str,
    parts: &BTreeMap<Part, String>,
) -> Result<(LoraKind, Option<usize>)> {
    let path = file.path();
    let has = |p: Part| parts.contains_key(&p);
    let key = |p: Part| parts.get(&p).map(String::as_str).unwrap_or("");
    let need = |p: Part, what: &str| -> Result<Vec<usize>> {
        match parts.get(&p) {
            Some(k) => Ok(shape(file, k)),
            None => Err(err(
                path,
                format!("module `{module}` has no {what} (its tensors: {parts:?})"),
            )),
        }
    };
    let matrix = |s: &[usize], k: &str| -> Result<()> {
        if s.len() == 2 || s.len() == 4 {
            Ok(())
        } else {
            Err(err(
                path,
                format!("tensor `{k}` has shape {s:?}, a 2-D or 4-D factor was expected"),
            ))
        }
    };
    let ranks_agree = |a: Part, a_dim: usize, b: Part, b_dim: usize| -> Result<usize> {
        let (sa, sb) = (shape(file, key(a)), shape(file, key(b)));
        matrix(&sa, key(a))?;
        matrix(&sb, key(b))?;
        if sa[a_dim] != sb[b_dim] {
            return Err(err(
                path,
                format!(
                    "ranks disagree: `{}` {sa:?} has rank {}, `{}` {sb:?} has rank {}",
                    key(a),
                    sa[a_dim],
                    key(b),
                    sb[b_dim]
                ),
            ));
        }
        Ok(sa[a_dim])
    };
    if has(Part::Up) || has(Part::Down) {
        need(Part::Up, "up (lora_up / lora_B) weight")?;
        need(Part::Down, "down (lora_down / lora_A) weight")?;
        let rank = ranks_agree(Part::Up, 1, Part::Down, 0)?;
        return Ok((LoraKind::Lora, Some(rank)));
    }
    if has(Part::HadaW1A) || has(Part::HadaW2A) {
        for (p, w) in [
            (Part::HadaW1A, "hada_w1_a"),
            (Part::HadaW1B, "hada_w1_b"),
            (Part::HadaW2A, "hada_w2_a"),
            (Part::HadaW2B, "hada_w2_b"),
        ] {
            need(p, w)?;
        }
        if has(Part::HadaT1) != has(Part::HadaT2) {
            return Err(err(
                path,
                format!("module `{module}` has one of hada_t1 / hada_t2 without the other"),
            ));
        }
        // Without Tucker cores w_a is [out, r]; with them [r, out].
        let a_dim = if has(Part::HadaT1) { 0 } else { 1 };
        let rank = ranks_agree(Part::HadaW1A, a_dim, Part::HadaW1B, 0)?;
        ranks_agree(Part::HadaW2A, a_dim, Part::HadaW2B, 0)?;
        return Ok((LoraKind::LoHa, Some(rank)));
    }
    if has(Part::LokrW1) || has(Part::LokrW1A) || has(Part::LokrW2) || has(Part::LokrW2A) {
        let mut rank = None;
        if !has(Part::LokrW1) {
            need(Part::LokrW1A, "lokr_w1 or lokr_w1_a")?;
            need(Part::LokrW1B, "lokr_w1_b")?;
            rank = Some(ranks_agree(Part::LokrW1A, 1, Part::LokrW1B, 0)?);
        }
        if !has(Part::LokrW2) {
            need(Part::LokrW2A, "lokr_w2 or lokr_w2_a")?;
            need(Part::LokrW2B, "lokr_w2_b")?;
            let a_dim = if has(Part::LokrT2) { 0 } else { 1 };
            rank = Some(ranks_agree(Part::LokrW2A, a_dim, Part::LokrW2B, 0)?);
        }
        return Ok((LoraKind::LoKr, rank));
    }
    Err(err(
        path,
        format!("module `{module}` has no update tensors, only {parts:?}"),
    ))
}
