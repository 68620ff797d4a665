//! A restricted pickle reader for PyTorch state dicts (the `data.pkl` of a `.pth` zip
//! and the pickles of the legacy `.pt` format).
//!
//! It is not an interpreter of Python: it builds plain values (ints, floats, strings,
//! tuples, lists, dicts) and knows exactly these globals, none of which runs anything:
//!
//! | global | becomes |
//! |---|---|
//! | `collections.OrderedDict` (called with no arguments) | an empty dict |
//! | `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` | a [`TensorRef`] |
//! | `torch._utils._rebuild_parameter(tensor, ...)` | the tensor |
//! | `torch.FloatStorage`, `DoubleStorage`, `HalfStorage`, `BFloat16Storage`, `LongStorage`, `IntStorage`, `ShortStorage`, `CharStorage`, `ByteStorage`, `BoolStorage` | the element type of a persistent storage id |
//!
//! Any other global, and any opcode outside the protocol 2-4 subset a state dict needs
//! (`NEWOBJ`, `INST`, `OBJ`, `EXT*`, protocol 0 text opcodes, ...), is refused with
//! [`ModelError::Pickle`] naming it. Lists and dicts are shared, never copied, so memory
//! stays proportional to the pickle's length.
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use super::pickle_value::{ALLOWED, Global, GlobalRef, global};
pub use super::pickle_value::{StorageRef, TensorRef, TorchDtype, Value};
use crate::{ModelError, Result};

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    op_at: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn err(&self, message: impl Into<String>) -> ModelError {
        ModelError::Pickle {
            path: self.path.to_path_buf(),
            offset: self.op_at,
            message: message.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| {
            self.err(format!(
                "wants {n} bytes but the stream ends {} bytes later",
                self.bytes.len() - self.pos
            ))
        })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<usize> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn u64(&mut self) -> Result<usize> {
        let b = self.take(8)?;
        let v = u64::from_le_bytes(b.try_into().expect("8 bytes"));
        usize::try_from(v).map_err(|_| self.err(format!("length {v} does not fit")))
    }

    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.bytes[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("GLOBAL without a newline"))?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| self.err("GLOBAL is not UTF-8"))?;
        self.pos += n + 1;
        Ok(s)
    }

    fn utf8(&mut self, n: usize) -> Result<Value> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| self.err("string is not UTF-8"))?;
        Ok(Value::Str(s.into()))
    }

    fn latin1(&mut self, n: usize) -> Result<Value> {
        let b = self.take(n)?;
        Ok(Value::Str(
            b.iter().map(|&c| c as char).collect::<String>().into(),
        ))
    }
}

struct Machine<'a> {
    r: Reader<'a>,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<usize, Value>,
}

impl Machine<'_> {
    fn pop(&mut self) -> Result<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.r.err("stack underflow"));
        }
        Ok(self.stack.pop().expect("checked"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self.marks.pop().ok_or_else(|| self.r.err("no MARK"))?;
        Ok(self.stack.split_off(mark))
    }

    fn top(&mut self) -> Result<&mut Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.r.err("stack underflow"));
        }
        Ok(self.stack.last_mut().expect("checked"))
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<()> {
        if !items.len().is_multiple_of(2) {
            return Err(self.r.err("SETITEMS with an odd number of values"));
        }
        let target = match self.top()? {
            Value::Dict(d) => Rc::clone(d),
            other => {
                let kind = other.kind();
                return Err(self.r.err(format!("SETITEM(S) on a {kind}, not a dict")));
            }
        };
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            target.borrow_mut().push((k, v));
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> Result<()> {
        match self.top()? {
            Value::List(l) => {
                l.borrow_mut().extend(items);
                Ok(())
            }
            other => {
                let kind = other.kind();
                Err(self.r.err(format!("APPEND(S) on a {kind}, not a list")))
            }
        }
    }

    fn persistent(&self, pid: Value) -> Result<Value> {
        let bad = || {
            self.r.err(
                "persistent id is not ('storage', torch.<Type>Storage, key, location, numel[, None])",
            )
        };
        let Value::Tuple(t) = pid else {
            return Err(bad());
        };
        if !(t.len() == 5 || t.len() == 6) || t[0].as_str() != Some("storage") {
            return Err(bad());
        }
        let dtype = match &t[1] {
            Value::Callable(GlobalRef(Global::Storage(d))) => *d,
            _ => return Err(bad()),
        };
        let key = t[2].as_str().ok_or_else(bad)?.to_string();
        let numel = t[4]
            .as_int()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(bad)?;
        if t.len() == 6 && !matches!(t[5], Value::None) {
            return Err(self.r.err(format!(
                "storage `{key}` is a view of another storage (legacy view metadata), which is not supported"
            )));
        }
        Ok(Value::Storage(Rc::new(StorageRef { dtype, key, numel })))
    }

    fn reduce(&self, callable: Value, args: Value) -> Result<Value> {
        let Value::Callable(GlobalRef(g)) = callable else {
            return Err(self.r.err(format!("REDUCE calls a {}", callable.kind())));
        };
        let Value::Tuple(args) = args else {
            return Err(self.r.err("REDUCE arguments are not a tuple"));
        };
        match g {
            Global::OrderedDict if args.is_empty() => {
                Ok(Value::Dict(Rc::new(RefCell::new(Vec::new()))))
            }
            Global::RebuildTensorV2 if args.len() >= 4 => {
                let Value::Storage(storage) = &args[0] else {
                    return Err(self.r.err("_rebuild_tensor_v2 without a storage"));
                };
                let ints = |v: &Value, what: &str| -> Result<Vec<usize>> {
                    let Value::Tuple(t) = v else {
                        return Err(self
                            .r
                            .err(format!("_rebuild_tensor_v2 {what} is not a tuple")));
                    };
                    t.iter()
                        .map(|x| {
                            x.as_int()
                                .and_then(|i| usize::try_from(i).ok())
                                .ok_or_else(|| {
                                    self.r.err(format!(
                                        "_rebuild_tensor_v2 {what} has a negative or non-int entry"
                                    ))
                                })
                        })
                        .collect()
                };
                let offset = args[1]
                    .as_int()
                    .and_then(|i| usize::try_from(i).ok())
                    .ok_or_else(|| self.r.err("_rebuild_tensor_v2 offset is not an int >= 0"))?;
                let size = ints(&args[2], "size")?;
                let stride = ints(&args[3], "stride")?;
                if size.len() != stride.len() {
                    return Err(self.r.err(format!(
                        "_rebuild_tensor_v2 size {size:?} and stride {stride:?} differ in rank"
                    )));
                }
                Ok(Value::Tensor(Rc::new(TensorRef {
                    storage: Rc::clone(storage),
                    offset,
                    size,
                    stride,
                })))
            }
            Global::RebuildParameter if !args.is_empty() => match &args[0] {
                t @ Value::Tensor(_) => Ok(t.clone()),
                _ => Err(self.r.err("_rebuild_parameter without a tensor")),
            },
            other => Err(self.r.err(format!(
                "call of {other:?} with {} argument(s) is not supported",
                args.len()
            ))),
        }
    }

    fn step(&mut self) -> Result<Option<Value>> {
        self.r.op_at = self.r.pos;
        let op = self.r.u8()?;
        match op {
            0x80 => {
                let proto = self.r.u8()?;
                if !(2..=5).contains(&proto) {
                    return Err(self
                        .r
                        .err(format!("pickle protocol {proto} is not supported")));
                }
            }
            0x95 => {
                self.r.u64()?; // FRAME: a length hint only
            }
            b'.' => return self.pop().map(Some),
            b'(' => self.marks.push(self.stack.len()),
            b'N' => self.stack.push(Value::None),
            0x88 => self.stack.push(Value::Bool(true)),
            0x89 => self.stack.push(Value::Bool(false)),
            b'J' => {
                let b = self.r.take(4)?;
                let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                self.stack.push(Value::Int(v as i128));
            }
            b'K' => {
                let v = self.r.u8()?;
                self.stack.push(Value::Int(v as i128));
            }
            b'M' => {
                let b = self.r.take(2)?;
                self.stack
                    .push(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i128));
            }
            0x8a => {
                let n = self.r.u8()? as usize;
                if n > 16 {
                    return Err(self.r.err(format!("LONG1 of {n} bytes is too long")));
                }
                let b = self.r.take(n)?;
                let mut v: i128 = 0;
                for (i, &byte) in b.iter().enumerate() {
                    v |= (byte as i128) << (8 * i);
                }
                if n > 0 && n < 16 && b[n - 1] & 0x80 != 0 {
                    v -= 1i128 << (8 * n);
                }
                self.stack.push(Value::Int(v));
            }
            b'G' => {
                let b = self.r.take(8)?;
                let v = f64::from_be_bytes(b.try_into().expect("8 bytes"));
                self.stack.push(Value::Float(v));
            }
            b'X' => {
                let n = self.r.u32()?;
                let v = self.r.utf8(n)?;
                self.stack.push(v);
            }
            0x8c => {
                let n = self.r.u8()? as usize;
                let v = self.r.utf8(n)?;
                self.stack.push(v);
            }
            0x8d => {
                let n = self.r.u64()?;
                let v = self.r.utf8(n)?;
                self.stack.push(v);
            }
            b'T' | b'B' => {
                let n = self.r.u32()?;
                let v = self.r.latin1(n)?;
                self.stack.push(v);
            }
            b'U' | b'C' => {
                let n = self.r.u8()? as usize;
                let v = self.r.latin1(n)?;
                self.stack.push(v);
            }
            b')' => self.stack.push(Value::Tuple(Rc::from(Vec::new()))),
            b't' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::Tuple(items.into()));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                self.stack.push(Value::Tuple(items.into()));
            }
            b']' => self.stack.push(Value::List(Rc::default())),
            b'l' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::List(Rc::new(RefCell::new(items))));
            }
            b'a' => {
                let v = self.pop()?;
                self.append(vec![v])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.append(items)?;
            }
            b'}' => self.stack.push(Value::Dict(Rc::default())),
            b'd' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::Dict(Rc::default()));
                self.set_items(items)?;
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![k, v])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.set_items(items)?;
            }
            b'q' | b'r' | 0x94 => {
                let key = match op {
                    b'q' => self.r.u8()? as usize,
                    b'r' => self.r.u32()?,
                    _ => self.memo.len(),
                };
                let v = self.top()?.clone();
                self.memo.insert(key, v);
            }
            b'h' | b'j' => {
                let key = if op == b'h' {
                    self.r.u8()? as usize
                } else {
                    self.r.u32()?
                };
                let v = self
                    .memo
                    .get(&key)
                    .cloned()
                    .ok_or_else(|| self.r.err(format!("memo entry {key} is not set")))?;
                self.stack.push(v);
            }
            b'0' => {
                self.pop()?;
            }
            b'c' | 0x93 => {
                let (module, name) = if op == b'c' {
                    (self.r.line()?.to_string(), self.r.line()?.to_string())
                } else {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module.as_str(), name.as_str()) {
                        (Some(m), Some(n)) => (m.to_string(), n.to_string()),
                        _ => return Err(self.r.err("STACK_GLOBAL without two strings")),
                    }
                };
                let g = global(&module, &name).ok_or_else(|| {
                    self.r.err(format!(
                        "global `{module}.{name}` is refused: a state dict of tensors only uses {ALLOWED}"
                    ))
                })?;
                self.stack.push(Value::Callable(GlobalRef(g)));
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let v = self.reduce(callable, args)?;
                self.stack.push(v);
            }
            b'b' => {
                // BUILD: only an OrderedDict's attributes (`_metadata`), which are dropped.
                let _state = self.pop()?;
                if !matches!(self.top()?, Value::Dict(_)) {
                    return Err(self
                        .r
                        .err("BUILD on anything but an OrderedDict is refused"));
                }
            }
            b'Q' => {
                let pid = self.pop()?;
                let v = self.persistent(pid)?;
                self.stack.push(v);
            }
            other => return Err(self.r.err(format!(
                "opcode 0x{other:02x} ({:?}) is refused: not part of the tensor state-dict subset",
                other as char
            ))),
        }
        Ok(None)
    }
}

/// Reads one pickle starting at `*pos` in `bytes`, up to its `STOP`, and moves `*pos`
/// past it.
///
/// # Errors
/// [`ModelError::Pickle`] for a refused opcode or global, a malformed or truncated
/// stream.
pub fn read_pickle(bytes: &[u8], pos: &mut usize, path: &Path) -> Result<Value> {
    let mut m = Machine {
        r: Reader {
            bytes,
            pos: *pos,
            op_at: *pos,
            path,
        },
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    loop {
        if let Some(v) = m.step()? {
            *pos = m.r.pos;
            return Ok(v);
        }
    }
}
