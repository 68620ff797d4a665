//! The CLIP image towers.
use anyhow::Result;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

use super::args::BenchArgs;
use super::models::tower;
use super::report::Recorder;
use super::timing::{build_log, materialise, time_runs};

impl BenchArgs {
    /// The image towers, one at a time.
    pub(super) fn bench_towers<B: Backend>(
        &self,
        device: &B::Device,
        rec: &mut Recorder,
    ) -> Result<()> {
        let specs = if self.towers.is_empty() {
            vec!["vit-l-14".to_string(), "vit-bigg-14".to_string()]
        } else {
            self.towers.clone()
        };
        for spec in &specs {
            let t0 = build_log("an image tower", spec);
            let (name, model) = tower::<B>(spec, device)?;
            let (model, n) = materialise(model, self.float(), device)?;
            let built = (t0.elapsed().as_secs_f64(), n);
            let s = model.image_size();
            let shape = [self.tower_batch, 3, s, s];
            let pixels = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), device);
            let r = time_runs::<B, _>(device, self.plan(), || {
                Ok(model.forward(pixels.clone())?.image_embeds)
            })?;
            let what = format!("image tower {name}, batch {} at {s}x{s}", self.tower_batch);
            // Two towers of one name (a config and its weights) get distinct rows.
            let row = rec.distinct_name(format!("tower:{name}"));
            rec.push(&row, what, built, r)?;
        }
        Ok(())
    }
}
