//! The `NNNNN.parquet` img2dataset writes beside each `NNNNN.tar`: one row per sample
//! with its `key` and `caption` (and `url`, `status`, sizes...). Only `key` and `caption`
//! are read.
use std::collections::BTreeMap;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type;

use crate::{ModelError, Result};

/// Most rows read from one shard's parquet (img2dataset writes 10 000 per shard).
pub const MAX_PARQUET_ROWS: i64 = 10_000_000;

/// Longest caption kept, in bytes (LAION's are a few hundred); longer ones are refused.
pub const MAX_CAPTION_BYTES: usize = 1 << 16;

/// Captions by key from an img2dataset parquet; rows whose caption is null are left out.
///
/// # Errors
/// An unreadable or malformed parquet file, one without a `key` or a `caption` column, a
/// non-string key or caption, more than [`MAX_PARQUET_ROWS`] rows, a caption over
/// [`MAX_CAPTION_BYTES`] (all naming the file).
pub fn read_captions(path: &Path) -> Result<BTreeMap<String, String>> {
    let bad = |m: String| ModelError::config(path, m);
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let reader =
        SerializedFileReader::new(file).map_err(|e| bad(format!("not a parquet file: {e}")))?;
    let meta = reader.metadata().file_metadata();
    if meta.num_rows() > MAX_PARQUET_ROWS {
        return Err(bad(format!(
            "{} rows, over the limit of {MAX_PARQUET_ROWS} for one shard",
            meta.num_rows()
        )));
    }
    let root = meta.schema_descr().root_schema();
    let column = |want: &str| {
        root.get_fields()
            .iter()
            .find(|f| f.name() == want)
            .cloned()
            .ok_or_else(|| {
                let have: Vec<&str> = root.get_fields().iter().map(|f| f.name()).collect();
                bad(format!("no `{want}` column (columns: {})", have.join(", ")))
            })
    };
    let fields = vec![column("key")?, column("caption")?];
    let projection = Type::group_type_builder(root.name())
        .with_fields(fields)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let rows = reader
        .get_row_iter(Some(projection))
        .map_err(|e| bad(e.to_string()))?;
    let mut out = BTreeMap::new();
    for (i, row) in rows.enumerate() {
        if i as i64 >= MAX_PARQUET_ROWS {
            return Err(bad(format!("over {MAX_PARQUET_ROWS} rows for one shard")));
        }
        let row = row.map_err(|e| bad(format!("row {i}: {e}")))?;
        let (mut key, mut caption) = (None, None);
        for (name, field) in row.get_column_iter() {
            let value = match field {
                Field::Str(s) => Some(s.clone()),
                Field::Null => None,
                other => {
                    return Err(bad(format!("row {i}: `{name}` is {other:?}, not a string")));
                }
            };
            match name.as_str() {
                "key" => key = value,
                _ => caption = value,
            }
        }
        if caption
            .as_ref()
            .is_some_and(|c| c.len() > MAX_CAPTION_BYTES)
        {
            return Err(bad(format!(
                "row {i}: a caption over {MAX_CAPTION_BYTES} bytes"
            )));
        }
        if let (Some(k), Some(c)) = (key, caption) {
            out.insert(k, c.trim().to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::train::curate::read_records;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/curate")
    }

    /// pyarrow's file (`tools/reference/make_curate_fixtures.py`): the captions of keys
    /// without `.txt` come from it; a key without either is listed.
    #[test]
    fn img2dataset_parquet_supplies_captions() {
        let c = read_captions(&fixtures().join("webdataset/00000.parquet")).unwrap();
        // Four rows, one with a null caption.
        assert_eq!(c.len(), 3);
        assert_eq!(c["000000001"], "the Countess of Lovelace, portrait");
        let mut got = Vec::new();
        let skipped = read_records(&fixtures().join("webdataset"), &mut |r| {
            got.push((r.key, r.caption));
            Ok(())
        })
        .unwrap();
        let want = [
            ("00000_000000000", "Ada Lovelace at the Royal Society"),
            ("00000_000000001", "the Countess of Lovelace, portrait"),
        ];
        assert_eq!(
            got,
            want.map(|(k, c)| (k.to_string(), c.to_string())).to_vec()
        );
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].source, "00000.tar:000000002");
        assert_eq!(
            skipped[0].reason,
            "no caption (no .txt member, no parquet row)"
        );
        // A parquet without captions is refused, naming the file and its columns.
        let dir = fixtures().join("no_caption");
        let e = read_records(&dir, &mut |_| Ok(())).unwrap_err().to_string();
        assert!(
            e.contains("00000.parquet") && e.contains("no `caption` column (columns: url, key,"),
            "{e}"
        );
        let e = read_captions(&dir.join("00000.tar"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a parquet file"), "{e}");
    }
}
