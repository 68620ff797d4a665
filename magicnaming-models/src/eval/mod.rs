//! The metrics identity-preserving generation papers report (PhotoMaker, InstantID,
//! IP-Adapter, MagicNaming), computed on images:
//!
//! - **Face Sim**: the cosine of ArcFace embeddings of the largest detected face of a
//!   generated image and of the reference photo (MTCNN, five-point alignment to 112 x
//!   112, IResNet, as `face similarity`); reported as mean and median over the images
//!   with a face, with the share of images where a face was found;
//! - **CLIP-T**: the cosine of a full CLIP model's image embedding and its prompt's text
//!   embedding ([`crate::clip::clip_model::ClipModel::clip_t`]).
pub mod identity;
pub mod summary;

pub use identity::{FaceEmbedding, IdentityScorer, face_sim};
pub use summary::{EvalReport, ImageScore, ReferenceScore, Summary, median};
