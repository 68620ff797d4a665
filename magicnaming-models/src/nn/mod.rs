//! Building blocks shared by the model families: float casts and mixed precision,
//! normalisation with f32 statistics, eval BatchNorm and PReLU, the Conv2d forward,
//! diffusers' attention and resnet blocks, and our kernels for the cubecl backends and
//! burn-flex.
pub mod attention;
pub mod channel;
pub mod conv;
pub mod kernels;
pub mod linear;
pub mod lora;
pub mod norm;
pub mod precision;
pub mod resnet;
