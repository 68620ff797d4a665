//! SDXL text side: prompt encoding with both CLIP text encoders, name text-coding.
