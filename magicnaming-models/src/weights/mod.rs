//! Weight loading: safetensors reading, per-format key remapping, load reports.
