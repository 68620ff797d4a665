//! Single layers at SDXL's UNet level shapes: GroupNorm + SiLU (`norms`) and 3x3
//! convolutions (`convs`), burn's and ours where ours apply.
use anyhow::{bail, Result};
use burn::nn::GroupNormConfig;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Tensor};
use magicnaming_models::nn::precision;

use super::args::BenchArgs;
use super::report::Recorder;
use super::timing::{materialise, time_runs};

impl BenchArgs {
    /// SDXL's UNet level widths 320/640/1280 with their latent sides l, l/2, l/4 (`l` =
    /// resolution / 8), for the `norms` and `convs` components.
    fn level_shapes(&self) -> Result<[(usize, usize); 3]> {
        let l = self.resolution / 8;
        if l / 4 == 0 {
            bail!(
                "--resolution {}: too small for the level shapes (at least 32)",
                self.resolution
            );
        }
        Ok([(320, l), (640, l / 2), (1280, l / 4)])
    }

    /// A random activation `[2, c, side, side]` in the --dtype float type.
    fn activation<B: Backend>(&self, c: usize, side: usize, device: &B::Device) -> Tensor<B, 4> {
        precision::cast(
            Tensor::<B, 4>::random([2, c, side, side], Distribution::Normal(0.0, 1.0), device),
            DType::from(self.float()),
        )
    }

    /// GroupNorm (32 groups) + SiLU, as in every ResnetBlock2D, on `[2, C, l, l]` for
    /// SDXL's level widths 320/640/1280 at latent sides l, l/2, l/4 (`l` = resolution /
    /// 8): burn's module then `silu`; our generic path (f32 statistics for f16 by casting);
    /// our fused kernel where this backend has one.
    pub(super) fn bench_norms<B: Backend>(
        &self,
        device: &B::Device,
        rec: &mut Recorder,
    ) -> Result<()> {
        use magicnaming_models::nn::{kernels, norm};
        for (c, side) in self.level_shapes()? {
            let norm = GroupNormConfig::new(32, c)
                .with_epsilon(1e-5)
                .init::<B>(device);
            let (norm, n) = materialise(norm, self.float(), device)?;
            let x = self.activation::<B>(c, side, device);
            let shape = format!("[2, {c}, {side}, {side}], 32 groups");
            let r = time_runs::<B, _>(device, self.plan(), || Ok(silu(norm.forward(x.clone()))))?;
            let what = format!("burn GroupNorm::forward + silu, {shape}");
            rec.push(&format!("norm:burn:{c}x{side}"), what, (0.0, n), r)?;

            let was = kernels::enabled();
            kernels::set_enabled(false);
            let r = time_runs::<B, _>(device, self.plan(), || {
                Ok(norm::group_norm_silu(&norm, x.clone()))
            });
            kernels::set_enabled(was);
            let what = format!("norm::group_norm_silu without kernels (f32 statistics), {shape}");
            rec.push(&format!("norm:generic:{c}x{side}"), what, (0.0, n), r?)?;

            if kernels::group_norm(&norm, x.clone(), true).is_err() {
                log::info!(
                    "no GroupNorm kernel of ours for {} (or --no-kernels)",
                    B::name(device)
                );
                continue;
            }
            let r = time_runs::<B, _>(device, self.plan(), || {
                Ok(norm::group_norm_silu(&norm, x.clone()))
            })?;
            let what = format!("kernels::group_norm fused with SiLU, {shape}");
            rec.push(&format!("norm:kernel:{c}x{side}"), what, (0.0, n), r)?;
        }
        Ok(())
    }

    /// A 3x3 convolution (padding 1) C -> C on `[2, C, l, l]` at SDXL's level shapes, as
    /// `bench_norms`: burn's op, then ours where it applies.
    pub(super) fn bench_convs<B: Backend>(
        &self,
        device: &B::Device,
        rec: &mut Recorder,
    ) -> Result<()> {
        use burn::nn::conv::Conv2dConfig;
        use burn::nn::PaddingConfig2d;
        use magicnaming_models::nn::{conv, kernels};
        for (c, side) in self.level_shapes()? {
            let conv = Conv2dConfig::new([c, c], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init::<B>(device);
            let (conv, n) = materialise(conv, self.float(), device)?;
            let x = self.activation::<B>(c, side, device);
            let shape = format!("3x3, [2, {c}, {side}, {side}] -> {c} channels");
            let r = time_runs::<B, _>(device, self.plan(), || Ok(conv.forward(x.clone())))?;
            rec.push(
                &format!("conv:burn:{c}x{side}"),
                format!("burn Conv2d::forward, {shape}"),
                (0.0, n),
                r,
            )?;
            if kernels::conv2d(&conv, x.clone()).is_err() {
                log::info!(
                    "no conv kernel of ours applies here ({}, {:?})",
                    B::name(device),
                    self.dtype
                );
                continue;
            }
            let r = time_runs::<B, _>(device, self.plan(), || Ok(conv::conv2d(&conv, x.clone())))?;
            let what = format!("nn::conv::conv2d, our path, {shape}");
            rec.push(&format!("conv:ours:{c}x{side}"), what, (0.0, n), r)?;
        }
        Ok(())
    }
}
