//! One optimisation step: MSE loss, gradient scaling, global-norm clipping, and the
//! gradient sum of data parallelism over several devices.

use burn::module::{Module, ParamId};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use magicnaming_core::NameHead;

use super::dataset::Dataset;

/// Every parameter of the head: its id, and whether it is a 2-D weight (else a bias).
fn param_ids<B: AutodiffBackend>(head: &NameHead<B>) -> Vec<(ParamId, bool)> {
    let mut ids = Vec::new();
    for layer in &head.layers {
        ids.push((layer.weight.id, true));
        if let Some(b) = &layer.bias {
            ids.push((b.id, false));
        }
    }
    ids
}

/// Multiplies every gradient by `scale` (`ids` from [`param_ids`]).
fn scale_grads<B: AutodiffBackend>(
    grads: &mut GradientsParams,
    ids: &[(ParamId, bool)],
    scale: f64,
) {
    for &(id, is_weight) in ids {
        if is_weight {
            if let Some(g) = grads.remove::<B::InnerBackend, 2>(id) {
                grads.register(id, g.mul_scalar(scale));
            }
        } else if let Some(g) = grads.remove::<B::InnerBackend, 1>(id) {
            grads.register(id, g.mul_scalar(scale));
        }
    }
}

fn global_clip<B: AutodiffBackend>(head: &NameHead<B>, grads: &mut GradientsParams, max_norm: f64) {
    let ids = param_ids(head);
    let mut sq = 0f64;
    for (id, is_weight) in &ids {
        sq += if *is_weight {
            grads
                .get::<B::InnerBackend, 2>(*id)
                .map(|g| (g.clone() * g).sum().into_scalar().elem::<f64>())
        } else {
            grads
                .get::<B::InnerBackend, 1>(*id)
                .map(|g| (g.clone() * g).sum().into_scalar().elem::<f64>())
        }
        .unwrap_or(0.0);
    }
    let norm = sq.sqrt();
    // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when above.
    let scale = max_norm / (norm + 1e-6);
    if scale < 1.0 {
        scale_grads::<B>(grads, &ids, scale);
    }
}

/// Adds the gradients of `from` into `into`, moving them to `device` (data parallelism:
/// what burn's `MultiGradientsParams` does inside `step_multi`, done here so that global
/// clipping sees the summed gradient).
fn accumulate<B: AutodiffBackend>(
    into: &mut GradientsParams,
    mut from: GradientsParams,
    ids: &[(ParamId, bool)],
    device: &B::Device,
) {
    fn add<B: burn::tensor::backend::Backend, const D: usize>(
        into: &mut GradientsParams,
        from: &mut GradientsParams,
        id: ParamId,
        device: &B::Device,
    ) {
        if let Some(g) = from.remove::<B, D>(id) {
            let g = g.to_device(device);
            let sum = match into.remove::<B, D>(id) {
                Some(acc) => acc + g,
                None => g,
            };
            into.register(id, sum);
        }
    }
    for &(id, is_weight) in ids {
        if is_weight {
            add::<B::InnerBackend, 2>(into, &mut from, id, device);
        } else {
            add::<B::InnerBackend, 1>(into, &mut from, id, device);
        }
    }
}

/// One optimisation step on `rows`; returns the new head and the batch loss. With
/// several `devices` (the first holds the head and the optimizer), the batch is split
/// into contiguous shards, one per device; each shard's loss is weighted by its share of
/// the batch, so the summed gradient is the full batch's (data parallelism).
pub fn train_step<B: AutodiffBackend, O: Optimizer<NameHead<B>, B>>(
    head: NameHead<B>,
    optim: &mut O,
    dataset: &Dataset,
    rows: &[usize],
    lr: f64,
    grad_clip_norm: Option<f64>,
    devices: &[B::Device],
) -> (NameHead<B>, f64) {
    let (e, k, d) = (
        dataset.embed_dim(),
        dataset.index.num_tokens,
        dataset.index.token_dim,
    );
    let main = &devices[0];
    let shards = rows.len().min(devices.len()).max(1);
    let ids = param_ids(&head);
    let mut grads = GradientsParams::new();
    let mut value = 0f64;
    for (i, device) in devices.iter().enumerate().take(shards) {
        let part = &rows[i * rows.len() / shards..(i + 1) * rows.len() / shards];
        let b = part.len();
        let replica = if shards == 1 {
            head.clone()
        } else {
            head.clone().fork(device)
        };
        let x =
            Tensor::<B, 2>::from_data(TensorData::new(dataset.gather_embeds(part), [b, e]), device);
        let y = Tensor::<B, 3>::from_data(
            TensorData::new(dataset.gather_names(part), [b, k, d]),
            device,
        );
        let mut loss = replica.loss(replica.forward(x), y);
        if shards > 1 {
            loss = loss.mul_scalar(b as f64 / rows.len() as f64);
        }
        value += loss.clone().into_scalar().elem::<f64>();
        let shard_grads = GradientsParams::from_grads(loss.backward(), &replica);
        accumulate::<B>(&mut grads, shard_grads, &ids, main);
    }
    if let Some(max) = grad_clip_norm {
        global_clip(&head, &mut grads, max);
    }
    (optim.step(lr, head, grads), value)
}
