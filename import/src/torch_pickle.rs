//! Reader for PyTorch checkpoints written by `torch.save` (typically a
//! `state_dict`), so pretrained weights can be converted without Python.
//!
//! Why a hand-written pickle VM: serde-pickle does not support persistent ids
//! (`BINPERSID`), which torch uses to reference tensor storages, so this module
//! interprets the small subset of the pickle protocol that `torch.save` writes.
//! Nothing is ever executed: `GLOBAL`/`REDUCE` are interpreted only for a few
//! known callables (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
//! `torch._utils._rebuild_parameter`, ...); any other call becomes an opaque
//! object.
//!
//! Both on-disk formats are supported:
//! * zip (torch >= 1.6 default): `<prefix>/data.pkl` plus one entry
//!   `<prefix>/data/<key>` per storage; persistent ids are
//!   `('storage', storage_type, key, location, numel)`.
//! * legacy (`_use_new_zipfile_serialization=False`, torch < 1.6): a sequence of
//!   pickles (magic number, protocol version 1001, sys_info, the object, the list
//!   of storage keys) followed by the raw storages, each an 8-byte element count
//!   and the elements; persistent ids are
//!   `('storage', storage_type, root_key, location, numel, view_metadata)`.
//!
//! Robustness: every length read from the input is checked against the bytes
//! that are actually there before anything is allocated, arithmetic on sizes is
//! checked, the VM is iterative (the only recursion is bounded), and the memo,
//! the stack and the number of tensor elements produced are bounded.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

/// Magic number that starts a legacy (non-zip) `torch.save` file.
const LEGACY_MAGIC: i128 = 0x1950_a86a_20f9_469c_fc6c;
/// The only legacy protocol version torch has ever written.
const LEGACY_PROTOCOL_VERSION: i128 = 1001;
/// Upper bound on the pickle VM stack and on the number of MARKs.
const MAX_STACK: usize = 1 << 24;
/// Upper bound on the number of values one pickle may create (a node is 32
/// bytes, so this bounds the VM's memory to about 1 GiB).
const MAX_NODES: usize = 1 << 25;
/// Upper bound on the number of memo entries.
const MAX_MEMO: usize = 1 << 24;
/// Upper bound on nested interpreted calls (`_rebuild_from_type_v2` chains).
const MAX_CALL_DEPTH: usize = 8;
/// Upper bound on the nesting followed when looking for the tensor dict.
const MAX_NEST_DEPTH: usize = 4;
/// Upper bound on nesting followed when describing a value in an error.
const MAX_DESCRIBE_DEPTH: usize = 3;
/// Upper bound on tensor rank.
const MAX_NDIM: usize = 64;
/// A tensor may have more elements than its storage (stride 0, e.g. from
/// `expand`) only up to this many elements.
const MAX_BROADCAST_ELEMS: usize = 1 << 26;
/// Keys under which training scripts commonly nest the state dict.
const NESTED_STATE_DICT_KEYS: &[&str] = &["state_dict", "model_state_dict", "model", "module"];

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TorchDtype {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl TorchDtype {
    /// Size of one element in bytes.
    pub fn element_size(self) -> usize {
        match self {
            TorchDtype::F64 | TorchDtype::I64 => 8,
            TorchDtype::F32 | TorchDtype::I32 => 4,
            TorchDtype::F16 | TorchDtype::BF16 | TorchDtype::I16 => 2,
            TorchDtype::I8 | TorchDtype::U8 | TorchDtype::Bool => 1,
        }
    }

    /// Whether the values are converted to `f32` ([`TensorData::F32`]).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            TorchDtype::F32 | TorchDtype::F64 | TorchDtype::F16 | TorchDtype::BF16
        )
    }
}

/// Tensor values, converted: floating types to `f32`, integer and bool types
/// to `i64`.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One tensor of a checkpoint, contiguous row-major (storage offset and strides
/// already applied).
#[derive(Debug, Clone, PartialEq)]
pub struct TorchTensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
    /// Element type in the file, before conversion.
    pub dtype: TorchDtype,
}

impl TorchTensor {
    /// The values if this is a floating-point tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            TensorData::I64(_) => None,
        }
    }

    /// The values if this is an integer or bool tensor.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::I64(v) => Some(v),
            TensorData::F32(_) => None,
        }
    }

    /// Number of elements (the product of `shape`).
    pub fn numel(&self) -> usize {
        self.data.len()
    }
}

/// Which of the two `torch.save` formats a file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// Zip archive (torch >= 1.6 default).
    Zip,
    /// Sequence of pickles followed by raw storages (torch < 1.6, or
    /// `_use_new_zipfile_serialization=False`).
    Legacy,
}

/// Errors from reading a checkpoint. Messages say what is wrong and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TorchError {
    #[error(
        "truncated: {what} needs {needed} bytes at offset {offset}, file has {available} left"
    )]
    Truncated {
        what: String,
        needed: u64,
        offset: u64,
        available: u64,
    },
    #[error("unknown pickle opcode 0x{opcode:02x} at byte {offset} of {stream}")]
    UnknownOpcode {
        stream: &'static str,
        opcode: u8,
        offset: u64,
    },
    #[error("pickle error in {stream} at byte {offset} ({opcode}): {message}")]
    Pickle {
        stream: &'static str,
        offset: u64,
        opcode: &'static str,
        message: String,
    },
    #[error("not a PyTorch checkpoint: {0}")]
    NotACheckpoint(String),
    #[error("zip archive: {0}")]
    Zip(String),
    #[error("storage '{key}': {message}")]
    Storage { key: String, message: String },
    #[error("tensor '{name}': {message}")]
    Tensor { name: String, message: String },
    #[error("no tensor dict found: {0}")]
    NoTensorDict(String),
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Result<T, E = TorchError> = std::result::Result<T, E>;

/// Reads the tensor dict of a checkpoint (zip or legacy, detected from the
/// bytes). If the top-level object is not itself a dict of tensors, the dict
/// is looked for under `state_dict`, `model_state_dict`, `model` or `module`.
pub fn read_state_dict(bytes: &[u8]) -> Result<BTreeMap<String, TorchTensor>> {
    Checkpoint::parse(bytes)?.state_dict()
}

/// [`read_state_dict`] on a file.
pub fn read_state_dict_file(path: &Path) -> Result<BTreeMap<String, TorchTensor>> {
    let bytes = std::fs::read(path).map_err(|source| TorchError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_state_dict(&bytes)
}

// ---------------------------------------------------------------------------
// Pickle values

type NodeId = usize;

/// Element type named by a storage class, possibly one this reader cannot
/// convert (its element size is still needed to skip legacy storage data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StorageKind {
    Dtype(TorchDtype),
    Unsupported(&'static str, usize),
}

impl StorageKind {
    fn from_class_name(name: &str) -> Option<Self> {
        use TorchDtype::*;
        Some(match name {
            "FloatStorage" => StorageKind::Dtype(F32),
            "DoubleStorage" => StorageKind::Dtype(F64),
            "HalfStorage" => StorageKind::Dtype(F16),
            "BFloat16Storage" => StorageKind::Dtype(BF16),
            "LongStorage" => StorageKind::Dtype(I64),
            "IntStorage" => StorageKind::Dtype(I32),
            "ShortStorage" => StorageKind::Dtype(I16),
            "CharStorage" => StorageKind::Dtype(I8),
            "ByteStorage" | "UntypedStorage" => StorageKind::Dtype(U8),
            "BoolStorage" => StorageKind::Dtype(Bool),
            "ComplexHalfStorage" => StorageKind::Unsupported("ComplexHalfStorage", 4),
            "ComplexFloatStorage" => StorageKind::Unsupported("ComplexFloatStorage", 8),
            "ComplexDoubleStorage" => StorageKind::Unsupported("ComplexDoubleStorage", 16),
            "QInt8Storage" => StorageKind::Unsupported("QInt8Storage", 1),
            "QUInt8Storage" => StorageKind::Unsupported("QUInt8Storage", 1),
            "QInt32Storage" => StorageKind::Unsupported("QInt32Storage", 4),
            "QUInt4x2Storage" => StorageKind::Unsupported("QUInt4x2Storage", 1),
            "QUInt2x4Storage" => StorageKind::Unsupported("QUInt2x4Storage", 1),
            _ => return None,
        })
    }

    fn element_size(self) -> usize {
        match self {
            StorageKind::Dtype(d) => d.element_size(),
            StorageKind::Unsupported(_, size) => size,
        }
    }

    fn name(self) -> String {
        match self {
            StorageKind::Dtype(d) => format!("{d:?}"),
            StorageKind::Unsupported(name, _) => name.to_string(),
        }
    }
}

/// A reference to (a window of) a storage, from a persistent id.
#[derive(Debug, Clone)]
struct StorageRef {
    key: String,
    /// Start of the window in elements (legacy storage views only).
    offset: u64,
    /// Length of the window in elements; `None` means up to the end.
    len: Option<u64>,
}

#[derive(Debug, Clone)]
struct TensorMeta {
    storage: StorageRef,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

/// A pickle value. Containers refer to other nodes by index into the arena, so
/// shared references (BINGET) are O(1), mutation works like Python's, and
/// dropping is flat however deep or cyclic the structure.
#[derive(Debug, Clone)]
enum Node {
    None,
    Bool(bool),
    Int(i128),
    /// An integer too large for i128; never needed by torch, kept opaque.
    BigInt,
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<NodeId>),
    Tuple(Vec<NodeId>),
    Dict(Vec<(NodeId, NodeId)>),
    /// `(module, name)`; the larger variants are boxed to keep nodes small.
    Global(Box<(String, String)>),
    Storage(Box<StorageRef>),
    Tensor(Box<TensorMeta>),
    Object(Box<Object>),
}

/// Result of an uninterpreted call or NEWOBJ; dict/list items that the pickle
/// adds to it are kept so dict subclasses can still be navigated.
#[derive(Debug, Clone)]
struct Object {
    class: String,
    items: Vec<(NodeId, NodeId)>,
    list: Vec<NodeId>,
}

impl Node {
    fn object(class: String) -> Node {
        Node::Object(Box::new(Object {
            class,
            items: Vec::new(),
            list: Vec::new(),
        }))
    }

    fn kind_name(&self) -> &'static str {
        match self {
            Node::None => "None",
            Node::Bool(_) => "bool",
            Node::Int(_) | Node::BigInt => "int",
            Node::Float(_) => "float",
            Node::Str(_) => "str",
            Node::Bytes(_) => "bytes",
            Node::List(_) => "list",
            Node::Tuple(_) => "tuple",
            Node::Dict(_) => "dict",
            Node::Global(..) => "global",
            Node::Storage(_) => "storage",
            Node::Tensor(_) => "tensor",
            Node::Object(_) => "object",
        }
    }
}

/// What a storage key was declared as by the persistent ids seen so far.
#[derive(Debug, Clone, Copy)]
struct StorageDecl {
    kind: StorageKind,
    numel: u64,
}

fn opcode_name(op: u8) -> &'static str {
    match op {
        0x80 => "PROTO",
        0x95 => "FRAME",
        b'.' => "STOP",
        b'(' => "MARK",
        b'}' => "EMPTY_DICT",
        b']' => "EMPTY_LIST",
        b')' => "EMPTY_TUPLE",
        b'd' => "DICT",
        b'l' => "LIST",
        b't' => "TUPLE",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        0x94 => "MEMOIZE",
        b'h' => "BINGET",
        b'j' => "LONG_BINGET",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'M' => "BININT2",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'G' => "BINFLOAT",
        b'N' => "NONE",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        b'X' => "BINUNICODE",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8e => "BINBYTES8",
        b'c' => "GLOBAL",
        0x93 => "STACK_GLOBAL",
        b'R' => "REDUCE",
        b'b' => "BUILD",
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        b's' => "SETITEM",
        b'u' => "SETITEMS",
        b'a' => "APPEND",
        b'e' => "APPENDS",
        b'Q' => "BINPERSID",
        b'P' => "PERSID",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        _ => "unknown opcode",
    }
}

/// Decodes a little-endian two's complement integer (LONG1/LONG4 payload).
fn decode_long(bytes: &[u8]) -> Node {
    if bytes.len() > 16 {
        return Node::BigInt;
    }
    let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
    let mut buf = if negative { [0xffu8; 16] } else { [0u8; 16] };
    for (dst, src) in buf.iter_mut().zip(bytes) {
        *dst = *src;
    }
    Node::Int(i128::from_le_bytes(buf))
}

/// Python 2 `str` payload (BINSTRING): UTF-8 if valid, else Latin-1.
fn decode_py2_str(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    for (dst, src) in out.iter_mut().zip(bytes) {
        *dst = *src;
    }
    out
}

/// Output of one pickle run.
#[derive(Debug)]
struct Pickled {
    nodes: Vec<Node>,
    root: NodeId,
}

/// The pickle VM. `data` is the whole buffer the pickle lives in, so byte
/// offsets in errors are offsets into the file (legacy) or into `data.pkl`.
struct Vm<'d, 's> {
    data: &'d [u8],
    pos: usize,
    stream: &'static str,
    op_start: usize,
    op: u8,
    nodes: Vec<Node>,
    stack: Vec<NodeId>,
    marks: Vec<usize>,
    memo: HashMap<u32, NodeId>,
    storages: &'s mut BTreeMap<String, StorageDecl>,
}

impl<'d, 's> Vm<'d, 's> {
    fn new(
        data: &'d [u8],
        pos: usize,
        stream: &'static str,
        storages: &'s mut BTreeMap<String, StorageDecl>,
    ) -> Self {
        Vm {
            data,
            pos,
            stream,
            op_start: pos,
            op: 0,
            nodes: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            storages,
        }
    }

    fn err(&self, message: impl Into<String>) -> TorchError {
        TorchError::Pickle {
            stream: self.stream,
            offset: self.op_start as u64,
            opcode: opcode_name(self.op),
            message: message.into(),
        }
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'d [u8]> {
        let data: &'d [u8] = self.data;
        let available = data.len().saturating_sub(self.pos);
        let n_usize = usize::try_from(n).ok().filter(|&n| n <= available);
        let Some(n) = n_usize else {
            return Err(TorchError::Truncated {
                what: format!("{what} of {} in {}", opcode_name(self.op), self.stream),
                needed: n,
                offset: self.pos as u64,
                available: available as u64,
            });
        };
        let out = data.get(self.pos..self.pos + n).unwrap_or_default();
        self.pos += n;
        Ok(out)
    }

    fn take_u8(&mut self) -> Result<u8> {
        Ok(self.take(1, "argument")?.first().copied().unwrap_or(0))
    }

    fn take_u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(array(self.take(4, "argument")?)))
    }

    fn take_i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(array(self.take(4, "argument")?)))
    }

    fn take_u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(array(self.take(8, "argument")?)))
    }

    fn take_line(&mut self) -> Result<&'d str> {
        let data: &'d [u8] = self.data;
        let rest = data.get(self.pos..).unwrap_or_default();
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Err(TorchError::Truncated {
                what: format!(
                    "newline-terminated argument of {} in {}",
                    opcode_name(self.op),
                    self.stream
                ),
                needed: rest.len() as u64 + 1,
                offset: self.pos as u64,
                available: rest.len() as u64,
            });
        };
        let line = rest.get(..nl).unwrap_or_default();
        self.pos += nl + 1;
        std::str::from_utf8(line).map_err(|_| self.err("argument is not valid UTF-8"))
    }

    fn add(&mut self, node: Node) -> Result<NodeId> {
        if self.nodes.len() >= MAX_NODES {
            return Err(self.err(format!("more than {MAX_NODES} values")));
        }
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    fn push_id(&mut self, id: NodeId) -> Result<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.err(format!("stack deeper than {MAX_STACK} entries")));
        }
        self.stack.push(id);
        Ok(())
    }

    fn push(&mut self, node: Node) -> Result<()> {
        let id = self.add(node)?;
        self.push_id(id)
    }

    /// Pops one value; like Python 3, values below the innermost MARK are not
    /// reachable.
    fn pop(&mut self) -> Result<NodeId> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }

    fn top(&self) -> Result<NodeId> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.err("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<NodeId>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.err("no MARK on the stack"))?;
        if mark > self.stack.len() {
            return Err(self.err("MARK above the top of the stack"));
        }
        Ok(self.stack.split_off(mark))
    }

    fn memo_put(&mut self, key: u32) -> Result<()> {
        let id = self.top()?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&key) {
            return Err(self.err(format!("memo larger than {MAX_MEMO} entries")));
        }
        self.memo.insert(key, id);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<()> {
        let id = *self
            .memo
            .get(&key)
            .ok_or_else(|| self.err(format!("memo key {key} not found")))?;
        self.push_id(id)
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes.get(id).unwrap_or(&Node::None)
    }

    fn str_arg(&self, id: NodeId, what: &str) -> Result<String> {
        match self.node(id) {
            Node::Str(s) => Ok(s.clone()),
            other => Err(self.err(format!("{what} must be a str, got {}", other.kind_name()))),
        }
    }

    fn int_arg(&self, id: NodeId, what: &str) -> Result<i128> {
        match self.node(id) {
            Node::Int(v) => Ok(*v),
            Node::Bool(b) => Ok(i128::from(*b)),
            other => Err(self.err(format!("{what} must be an int, got {}", other.kind_name()))),
        }
    }

    fn usize_arg(&self, id: NodeId, what: &str) -> Result<usize> {
        let v = self.int_arg(id, what)?;
        usize::try_from(v).map_err(|_| self.err(format!("{what} {v} is negative or too large")))
    }

    fn seq_items(&self, id: NodeId) -> Option<&[NodeId]> {
        match self.node(id) {
            Node::Tuple(items) | Node::List(items) => Some(items),
            _ => None,
        }
    }

    fn usize_tuple(&self, id: NodeId, what: &str) -> Result<Vec<usize>> {
        let items = self.seq_items(id).ok_or_else(|| {
            self.err(format!(
                "{what} must be a tuple, got {}",
                self.node(id).kind_name()
            ))
        })?;
        if items.len() > MAX_NDIM {
            return Err(self.err(format!("{what} has more than {MAX_NDIM} dimensions")));
        }
        items
            .iter()
            .map(|&i| self.usize_arg(i, what))
            .collect::<Result<Vec<_>>>()
    }

    /// Runs until STOP; returns the root value and the position after STOP.
    fn run(mut self) -> Result<(Pickled, usize)> {
        loop {
            self.op_start = self.pos;
            self.op = 0;
            let op = {
                let data: &'d [u8] = self.data;
                match data.get(self.pos) {
                    Some(&b) => b,
                    None => {
                        return Err(TorchError::Truncated {
                            what: format!("pickle opcode in {} (no STOP)", self.stream),
                            needed: 1,
                            offset: self.pos as u64,
                            available: 0,
                        })
                    }
                }
            };
            self.pos += 1;
            self.op = op;
            match op {
                0x80 => {
                    let proto = self.take_u8()?;
                    if proto > 5 {
                        return Err(self.err(format!("unsupported pickle protocol {proto}")));
                    }
                }
                0x95 => {
                    self.take_u64()?;
                }
                b'.' => {
                    let root = self.pop()?;
                    let end = self.pos;
                    return Ok((
                        Pickled {
                            nodes: self.nodes,
                            root,
                        },
                        end,
                    ));
                }
                b'(' => {
                    if self.marks.len() >= MAX_STACK {
                        return Err(self.err(format!("more than {MAX_STACK} open MARKs")));
                    }
                    self.marks.push(self.stack.len());
                }
                b'}' => self.push(Node::Dict(Vec::new()))?,
                b']' => self.push(Node::List(Vec::new()))?,
                b')' => self.push(Node::Tuple(Vec::new()))?,
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.push(Node::Dict(pairs))?;
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Node::List(items))?;
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items))?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = vec![0; n];
                    for slot in items.iter_mut().rev() {
                        *slot = self.pop()?;
                    }
                    self.push(Node::Tuple(items))?;
                }
                b'q' => {
                    let key = self.take_u8()?;
                    self.memo_put(u32::from(key))?;
                }
                b'r' => {
                    let key = self.take_u32()?;
                    self.memo_put(key)?;
                }
                0x94 => {
                    let key = u32::try_from(self.memo.len())
                        .map_err(|_| self.err("memo index overflow"))?;
                    self.memo_put(key)?;
                }
                b'h' => {
                    let key = self.take_u8()?;
                    self.memo_get(u32::from(key))?;
                }
                b'j' => {
                    let key = self.take_u32()?;
                    self.memo_get(key)?;
                }
                b'J' => {
                    let v = self.take_i32()?;
                    self.push(Node::Int(i128::from(v)))?;
                }
                b'K' => {
                    let v = self.take_u8()?;
                    self.push(Node::Int(i128::from(v)))?;
                }
                b'M' => {
                    let v = u16::from_le_bytes(array(self.take(2, "argument")?));
                    self.push(Node::Int(i128::from(v)))?;
                }
                0x8a => {
                    let n = self.take_u8()?;
                    let bytes = self.take(u64::from(n), "integer bytes")?;
                    self.push(decode_long(bytes))?;
                }
                0x8b => {
                    let n = self.take_i32()?;
                    let n = u64::try_from(n).map_err(|_| self.err("negative byte count"))?;
                    let bytes = self.take(n, "integer bytes")?;
                    self.push(decode_long(bytes))?;
                }
                b'G' => {
                    let v = f64::from_be_bytes(array(self.take(8, "argument")?));
                    self.push(Node::Float(v))?;
                }
                b'N' => self.push(Node::None)?,
                0x88 => self.push(Node::Bool(true))?,
                0x89 => self.push(Node::Bool(false))?,
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => u64::from(self.take_u32()?),
                        0x8c => u64::from(self.take_u8()?),
                        _ => self.take_u64()?,
                    };
                    let bytes = self.take(n, "string")?;
                    let s = std::str::from_utf8(bytes)
                        .map_err(|_| self.err("string is not valid UTF-8"))?;
                    self.push(Node::Str(s.to_string()))?;
                }
                b'T' | b'U' => {
                    let n = if op == b'T' {
                        u64::try_from(self.take_i32()?)
                            .map_err(|_| self.err("negative string length"))?
                    } else {
                        u64::from(self.take_u8()?)
                    };
                    let bytes = self.take(n, "string")?;
                    self.push(Node::Str(decode_py2_str(bytes)))?;
                }
                b'B' | b'C' | 0x8e => {
                    let n = match op {
                        b'B' => u64::from(self.take_u32()?),
                        b'C' => u64::from(self.take_u8()?),
                        _ => self.take_u64()?,
                    };
                    let bytes = self.take(n, "bytes")?;
                    self.push(Node::Bytes(bytes.to_vec()))?;
                }
                b'c' => {
                    let module = self.take_line()?.to_string();
                    let name = self.take_line()?.to_string();
                    self.push(Node::Global(Box::new((module, name))))?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let name = self.str_arg(name, "STACK_GLOBAL name")?;
                    let module = self.str_arg(module, "STACK_GLOBAL module")?;
                    self.push(Node::Global(Box::new((module, name))))?;
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let result = self.call(callable, args, 0)?;
                    self.push_id(result)?;
                }
                0x81 | 0x92 => {
                    if op == 0x92 {
                        self.pop()?; // kwargs
                    }
                    let _args = self.pop()?;
                    let class = self.pop()?;
                    let class = self.class_name(class);
                    self.push(Node::object(class))?;
                }
                b'b' => {
                    // State is ignored: for OrderedDict it is `_metadata`, for
                    // tensors and parameters it carries nothing we need.
                    self.pop()?;
                    self.top()?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.set_items(vec![(key, value)])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.set_items(pairs)?;
                }
                b'a' => {
                    let value = self.pop()?;
                    self.append(vec![value])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let node = self.persistent_load(pid)?;
                    self.push(node)?;
                }
                b'P' => {
                    let pid = self.take_line()?.to_string();
                    let pid = self.add(Node::Str(pid))?;
                    let node = self.persistent_load(pid)?;
                    self.push(node)?;
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let id = self.top()?;
                    self.push_id(id)?;
                }
                _ => {
                    return Err(TorchError::UnknownOpcode {
                        stream: self.stream,
                        opcode: op,
                        offset: self.op_start as u64,
                    })
                }
            }
        }
    }

    fn pairs(&self, items: Vec<NodeId>) -> Result<Vec<(NodeId, NodeId)>> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err(format!("odd number of items ({}) for a dict", items.len())));
        }
        Ok(items.chunks_exact(2).map(|p| (p[0], p[1])).collect())
    }

    fn set_items(&mut self, pairs: Vec<(NodeId, NodeId)>) -> Result<()> {
        let target = self.top()?;
        let kind = self.node(target).kind_name();
        match self.nodes.get_mut(target) {
            Some(Node::Dict(items)) => items.extend(pairs),
            Some(Node::Object(obj)) => obj.items.extend(pairs),
            _ => return Err(self.err(format!("cannot set items on a {kind}"))),
        }
        Ok(())
    }

    fn append(&mut self, values: Vec<NodeId>) -> Result<()> {
        let target = self.top()?;
        let kind = self.node(target).kind_name();
        match self.nodes.get_mut(target) {
            Some(Node::List(items)) => items.extend(values),
            Some(Node::Object(obj)) => obj.list.extend(values),
            _ => return Err(self.err(format!("cannot append to a {kind}"))),
        }
        Ok(())
    }

    fn class_name(&self, id: NodeId) -> String {
        match self.node(id) {
            Node::Global(g) => format!("{}.{}", g.0, g.1),
            other => format!("<result of calling a {}>", other.kind_name()),
        }
    }

    /// Interprets `callable(*args)` for the callables torch checkpoints use;
    /// anything else becomes an opaque [`Node::Object`].
    fn call(&mut self, callable: NodeId, args: NodeId, depth: usize) -> Result<NodeId> {
        if depth > MAX_CALL_DEPTH {
            return Err(self.err(format!("calls nested deeper than {MAX_CALL_DEPTH}")));
        }
        let (module, name) = match self.node(callable) {
            Node::Global(g) => (g.0.clone(), g.1.clone()),
            _ => {
                let class = self.class_name(callable);
                return self.add(Node::object(class));
            }
        };
        let arg_ids: Vec<NodeId> = match self.node(args) {
            Node::Tuple(items) => items.clone(),
            other => {
                return Err(self.err(format!(
                    "arguments of {module}.{name} must be a tuple, got {}",
                    other.kind_name()
                )))
            }
        };
        let arg = |i: usize| arg_ids.get(i).copied();
        match (module.as_str(), name.as_str()) {
            ("collections", "OrderedDict") | ("builtins" | "__builtin__", "dict") => {
                let mut pairs = Vec::new();
                if let Some(items) = arg(0) {
                    let items = self
                        .seq_items(items)
                        .ok_or_else(|| self.err("OrderedDict argument must be a list of pairs"))?;
                    for &pair in items {
                        match self.seq_items(pair) {
                            Some(&[k, v]) => pairs.push((k, v)),
                            _ => return Err(self.err("OrderedDict item is not a pair")),
                        }
                    }
                }
                self.add(Node::Dict(pairs))
            }
            ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
                let (Some(storage), Some(offset), Some(size), Some(stride)) =
                    (arg(0), arg(1), arg(2), arg(3))
                else {
                    return Err(self.err(format!("{name} needs at least 4 arguments")));
                };
                let storage = match self.node(storage) {
                    Node::Storage(s) => (**s).clone(),
                    other => {
                        return Err(self.err(format!(
                            "{name}: first argument must be a storage, got {}",
                            other.kind_name()
                        )))
                    }
                };
                let offset = self.usize_arg(offset, "storage offset")?;
                let size = self.usize_tuple(size, "size")?;
                let stride = self.usize_tuple(stride, "stride")?;
                if size.len() != stride.len() {
                    return Err(self.err(format!(
                        "size has {} dimensions but stride has {}",
                        size.len(),
                        stride.len()
                    )));
                }
                self.add(Node::Tensor(Box::new(TensorMeta {
                    storage,
                    offset,
                    shape: size,
                    stride,
                })))
            }
            ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state") => match arg(0) {
                Some(data) if matches!(self.node(data), Node::Tensor(_)) => Ok(data),
                _ => Err(self.err(format!("{name}: first argument must be a tensor"))),
            },
            ("torch._tensor", "_rebuild_from_type_v2") => match (arg(0), arg(2)) {
                (Some(func), Some(inner_args)) => self.call(func, inner_args, depth + 1),
                _ => Err(self.err("_rebuild_from_type_v2 needs 4 arguments")),
            },
            ("torch", "Size") => match arg(0) {
                Some(dims) if self.seq_items(dims).is_some() => Ok(dims),
                _ => Err(self.err("torch.Size argument must be a tuple")),
            },
            ("_codecs", "encode") => {
                let text = match arg(0).map(|id| self.node(id)) {
                    Some(Node::Str(s)) => s.clone(),
                    _ => return Err(self.err("_codecs.encode: first argument must be a str")),
                };
                let bytes = text
                    .chars()
                    .map(|c| u8::try_from(u32::from(c)))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|_| self.err("_codecs.encode: text is not Latin-1"))?;
                self.add(Node::Bytes(bytes))
            }
            _ => self.add(Node::object(format!("{module}.{name}"))),
        }
    }

    /// Resolves `('storage', storage_type, key, location, numel[, view_metadata])`.
    fn persistent_load(&mut self, pid: NodeId) -> Result<Node> {
        let items = match self.node(pid) {
            Node::Tuple(items) => items.clone(),
            other => {
                return Err(self.err(format!(
                    "persistent id must be a tuple, got {}",
                    other.kind_name()
                )))
            }
        };
        let tag = match items.first().map(|&i| self.node(i)) {
            Some(Node::Str(s)) => s.clone(),
            _ => return Err(self.err("persistent id does not start with a str tag")),
        };
        if tag == "module" {
            // Legacy pickles of whole nn.Modules record their source code here.
            return Ok(Node::object("<module source>".to_string()));
        }
        if tag != "storage" {
            return Err(self.err(format!("unsupported persistent id type '{tag}'")));
        }
        if items.len() != 5 && items.len() != 6 {
            return Err(self.err(format!(
                "storage persistent id has {} items, expected 5 or 6",
                items.len()
            )));
        }
        let (type_id, key_id, numel_id) = (items[1], items[2], items[4]);
        let kind = match self.node(type_id) {
            Node::Global(g) if matches!(g.0.as_str(), "torch" | "torch.cuda" | "torch.storage") => {
                StorageKind::from_class_name(&g.1)
                    .ok_or_else(|| self.err(format!("unsupported storage type {}.{}", g.0, g.1)))?
            }
            Node::Global(g) => {
                return Err(self.err(format!("unsupported storage type {}.{}", g.0, g.1)))
            }
            other => {
                return Err(self.err(format!(
                    "storage type must be a global, got {}",
                    other.kind_name()
                )))
            }
        };
        let key = match self.node(key_id) {
            Node::Str(s) => s.clone(),
            Node::Int(v) => v.to_string(),
            other => {
                return Err(self.err(format!(
                    "storage key must be a str, got {}",
                    other.kind_name()
                )))
            }
        };
        let numel = u64::try_from(self.int_arg(numel_id, "storage size")?)
            .map_err(|_| self.err(format!("storage '{key}' has a negative or huge size")))?;
        let (offset, len) = match items.get(5).map(|&i| (i, self.node(i))) {
            None | Some((_, Node::None)) => (0, None),
            Some((view, _)) => {
                // Legacy storage view: (view_key, offset, view_size) into root.
                let parts = self
                    .seq_items(view)
                    .filter(|p| p.len() == 3)
                    .map(<[NodeId]>::to_vec)
                    .ok_or_else(|| self.err("view metadata must be (key, offset, size)"))?;
                let offset = u64::try_from(self.int_arg(parts[1], "view offset")?)
                    .map_err(|_| self.err("negative view offset"))?;
                let size = u64::try_from(self.int_arg(parts[2], "view size")?)
                    .map_err(|_| self.err("negative view size"))?;
                (offset, Some(size))
            }
        };
        if let Some(prev) = self.storages.get(&key) {
            if prev.kind != kind {
                return Err(self.err(format!(
                    "storage '{key}' is used as both {} and {}",
                    prev.kind.name(),
                    kind.name()
                )));
            }
        } else {
            self.storages
                .insert(key.clone(), StorageDecl { kind, numel });
        }
        Ok(Node::Storage(Box::new(StorageRef { key, offset, len })))
    }
}

// ---------------------------------------------------------------------------
// Checkpoint

/// The bytes of one storage and its element type.
struct StorageData<'a> {
    kind: StorageKind,
    bytes: Cow<'a, [u8]>,
}

/// A parsed checkpoint: the unpickled object graph plus the raw storages
/// (borrowed from the input where possible). Tensors are converted on demand.
pub struct Checkpoint<'a> {
    format: CheckpointFormat,
    nodes: Vec<Node>,
    root: NodeId,
    storages: HashMap<String, StorageData<'a>>,
    big_endian: bool,
    /// Total storage bytes, used to bound the elements materialized.
    storage_bytes: usize,
}

impl std::fmt::Debug for Checkpoint<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("format", &self.format)
            .field("storages", &self.storages.len())
            .field("storage_bytes", &self.storage_bytes)
            .field("big_endian", &self.big_endian)
            .finish_non_exhaustive()
    }
}

impl<'a> Checkpoint<'a> {
    /// Parses a checkpoint, detecting zip vs legacy format from the bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
            return parse_zip(bytes);
        }
        if bytes.first() == Some(&0x80) {
            return parse_legacy(bytes);
        }
        if bytes.get(257..262) == Some(b"ustar".as_slice()) {
            return Err(TorchError::NotACheckpoint(
                "this is a tar archive (the very old torch.save format), which is not supported; \
                 re-save it with a current torch"
                    .to_string(),
            ));
        }
        let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Err(TorchError::NotACheckpoint(format!(
            "expected a zip archive (PK\\x03\\x04) or a legacy torch.save pickle (0x80 PROTO), \
             file starts with [{}] ({} bytes)",
            head.join(" "),
            bytes.len()
        )))
    }

    pub fn format(&self) -> CheckpointFormat {
        self.format
    }

    /// The str keys of the top-level dict (empty if it is not a dict).
    pub fn top_level_keys(&self) -> Vec<String> {
        self.dict_items(self.root)
            .unwrap_or_default()
            .iter()
            .filter_map(|&(k, _)| self.str_of(k).map(str::to_string))
            .collect()
    }

    /// Finds the dict holding the tensors: the top-level object if it is a
    /// dict with tensor values, else the first of the keys `state_dict`,
    /// `model_state_dict`, `model`, `module` (recursively) that leads to one.
    /// Returns the key path (empty for the top level).
    pub fn find_tensor_dict(&self) -> Option<Vec<String>> {
        let mut path = Vec::new();
        self.search_tensor_dict(self.root, 0, &mut path)
            .then_some(path)
    }

    /// Converts the tensors of the dict found by [`Checkpoint::find_tensor_dict`].
    pub fn state_dict(&self) -> Result<BTreeMap<String, TorchTensor>> {
        let path = self.find_tensor_dict().ok_or_else(|| {
            TorchError::NoTensorDict(format!(
                "the top-level object is {}, and none of the keys {:?} holds a dict of tensors",
                self.describe(self.root, 0),
                NESTED_STATE_DICT_KEYS
            ))
        })?;
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        self.tensor_dict_at(&path)
    }

    /// Converts the tensor values of the dict reached from the top-level
    /// object through the str keys `path`. Non-tensor values are skipped.
    pub fn tensor_dict_at(&self, path: &[&str]) -> Result<BTreeMap<String, TorchTensor>> {
        let mut id = self.root;
        for (i, key) in path.iter().enumerate() {
            id = self.lookup(id, key).ok_or_else(|| {
                TorchError::NoTensorDict(format!(
                    "key path {:?} not found (no key '{key}' in {})",
                    &path[..=i],
                    self.describe(id, 0)
                ))
            })?;
        }
        let items = self.dict_items(id).ok_or_else(|| {
            TorchError::NoTensorDict(format!(
                "key path {path:?} leads to {}, not a dict",
                self.describe(id, 0)
            ))
        })?;
        // Every element produced is at least one byte of storage, read at
        // most a few times (tied weights); stride-0 views may add more.
        let mut budget = self
            .storage_bytes
            .saturating_mul(4)
            .saturating_add(MAX_BROADCAST_ELEMS);
        let mut out = BTreeMap::new();
        for &(k, v) in items {
            let Some(name) = self.str_of(k) else {
                log::debug!("skipping non-str key {}", self.describe(k, 0));
                continue;
            };
            match self.nodes.get(v) {
                Some(Node::Tensor(meta)) => {
                    let tensor = self.materialize(name, meta, &mut budget)?;
                    out.insert(name.to_string(), tensor);
                }
                _ => log::debug!(
                    "skipping non-tensor entry '{name}': {}",
                    self.describe(v, 0)
                ),
            }
        }
        Ok(out)
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes.get(id).unwrap_or(&Node::None)
    }

    fn str_of(&self, id: NodeId) -> Option<&str> {
        match self.node(id) {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    fn dict_items(&self, id: NodeId) -> Option<&[(NodeId, NodeId)]> {
        match self.node(id) {
            Node::Dict(items) => Some(items),
            Node::Object(obj) if !obj.items.is_empty() => Some(&obj.items),
            _ => None,
        }
    }

    /// Value of str key `key` (the last one, like Python's dict).
    fn lookup(&self, dict: NodeId, key: &str) -> Option<NodeId> {
        self.dict_items(dict)?
            .iter()
            .rev()
            .find(|&&(k, _)| self.str_of(k) == Some(key))
            .map(|&(_, v)| v)
    }

    fn search_tensor_dict(&self, id: NodeId, depth: usize, path: &mut Vec<String>) -> bool {
        let Some(items) = self.dict_items(id) else {
            return false;
        };
        if items
            .iter()
            .any(|&(_, v)| matches!(self.node(v), Node::Tensor(_)))
        {
            return true;
        }
        if depth >= MAX_NEST_DEPTH {
            return false;
        }
        for key in NESTED_STATE_DICT_KEYS {
            if let Some(v) = self.lookup(id, key) {
                path.push((*key).to_string());
                if self.search_tensor_dict(v, depth + 1, path) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }

    /// Short description of a value for error messages.
    fn describe(&self, id: NodeId, depth: usize) -> String {
        if let Some(items) = self.dict_items(id).filter(|items| !items.is_empty()) {
            let keys: Vec<String> = items
                .iter()
                .take(8)
                .map(|&(k, _)| match self.node(k) {
                    Node::Str(s) => format!("'{s}'"),
                    other => other.kind_name().to_string(),
                })
                .collect();
            let more = if items.len() > 8 { ", ..." } else { "" };
            let class = match self.node(id) {
                Node::Object(obj) => format!("{} ", obj.class),
                _ => String::new(),
            };
            return format!(
                "{class}dict with {} keys [{}{more}]",
                items.len(),
                keys.join(", ")
            );
        }
        match self.node(id) {
            Node::Object(obj) if obj.class == "<module source>" => {
                "a pickled nn.Module (save model.state_dict() instead)".to_string()
            }
            Node::Object(obj) => format!(
                "an object of class {} (a pickled nn.Module? save model.state_dict() instead)",
                obj.class
            ),
            Node::List(items) | Node::Tuple(items) if depth < MAX_DESCRIBE_DEPTH => {
                let first = items
                    .first()
                    .map(|&i| format!(" starting with {}", self.describe(i, depth + 1)))
                    .unwrap_or_default();
                format!(
                    "a {} of {} items{first}",
                    self.node(id).kind_name(),
                    items.len()
                )
            }
            Node::Str(s) => format!("str '{}'", s.chars().take(40).collect::<String>()),
            Node::Int(v) => format!("int {v}"),
            Node::Float(v) => format!("float {v}"),
            Node::Bytes(b) => format!("bytes of length {}", b.len()),
            Node::Tensor(t) => format!("tensor of shape {:?}", t.shape),
            other => format!("a {}", other.kind_name()),
        }
    }

    fn materialize(&self, name: &str, t: &TensorMeta, budget: &mut usize) -> Result<TorchTensor> {
        let fail = |message: String| TorchError::Tensor {
            name: name.to_string(),
            message,
        };
        let key = &t.storage.key;
        let storage = self
            .storages
            .get(key)
            .ok_or_else(|| fail(format!("storage '{key}' is missing from the file")))?;
        let dtype = match storage.kind {
            StorageKind::Dtype(d) => d,
            StorageKind::Unsupported(kind, _) => {
                return Err(fail(format!("storage '{key}' has unsupported type {kind}")))
            }
        };
        let es = dtype.element_size();
        let total = storage.bytes.len() / es;
        let window_start = usize::try_from(t.storage.offset)
            .ok()
            .filter(|&o| o <= total)
            .ok_or_else(|| {
                fail(format!(
                    "storage view starts at element {} but storage '{key}' has {total}",
                    t.storage.offset
                ))
            })?;
        let window_len = match t.storage.len {
            None => total - window_start,
            Some(len) => usize::try_from(len)
                .ok()
                .filter(|&l| l <= total - window_start)
                .ok_or_else(|| {
                    fail(format!(
                        "storage view of {len} elements at {window_start} exceeds storage '{key}' of {total}"
                    ))
                })?,
        };
        let numel = t
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| fail(format!("shape {:?} overflows", t.shape)))?;
        if numel > 0 {
            let last = t
                .shape
                .iter()
                .zip(&t.stride)
                .try_fold(t.offset, |acc, (&d, &s)| {
                    (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
                });
            match last {
                Some(last) if last < window_len => {}
                _ => {
                    return Err(fail(format!(
                        "shape {:?} with stride {:?} at offset {} reaches past the {} elements of storage '{key}'",
                        t.shape, t.stride, t.offset, window_len
                    )))
                }
            }
        }
        if numel > window_len && numel > MAX_BROADCAST_ELEMS {
            return Err(fail(format!(
                "{numel} elements from a storage of {window_len}: broadcast views are limited to {MAX_BROADCAST_ELEMS} elements"
            )));
        }
        *budget = budget.checked_sub(numel).ok_or_else(|| {
            fail(format!(
                "{numel} more elements exceed the limit for this file (many tensors view the same storage)"
            ))
        })?;
        let base = window_start + t.offset;
        let view = View {
            bytes: &storage.bytes,
            es,
            base,
            shape: &t.shape,
            stride: &t.stride,
            numel,
        };
        let be = self.big_endian;
        let bad = || fail("internal error: element index out of range".to_string());
        let data = match dtype {
            TorchDtype::F32 => TensorData::F32(
                view.gather(|b| {
                    let a = array::<4>(b);
                    if be {
                        f32::from_be_bytes(a)
                    } else {
                        f32::from_le_bytes(a)
                    }
                })
                .ok_or_else(bad)?,
            ),
            TorchDtype::F64 => TensorData::F32(
                view.gather(|b| {
                    let a = array::<8>(b);
                    (if be {
                        f64::from_be_bytes(a)
                    } else {
                        f64::from_le_bytes(a)
                    }) as f32
                })
                .ok_or_else(bad)?,
            ),
            TorchDtype::F16 => TensorData::F32(
                view.gather(|b| half::f16::from_bits(u16_of(b, be)).to_f32())
                    .ok_or_else(bad)?,
            ),
            TorchDtype::BF16 => TensorData::F32(
                view.gather(|b| half::bf16::from_bits(u16_of(b, be)).to_f32())
                    .ok_or_else(bad)?,
            ),
            TorchDtype::I64 => TensorData::I64(
                view.gather(|b| {
                    let a = array::<8>(b);
                    if be {
                        i64::from_be_bytes(a)
                    } else {
                        i64::from_le_bytes(a)
                    }
                })
                .ok_or_else(bad)?,
            ),
            TorchDtype::I32 => TensorData::I64(
                view.gather(|b| {
                    let a = array::<4>(b);
                    i64::from(if be {
                        i32::from_be_bytes(a)
                    } else {
                        i32::from_le_bytes(a)
                    })
                })
                .ok_or_else(bad)?,
            ),
            TorchDtype::I16 => TensorData::I64(
                view.gather(|b| i64::from(u16_of(b, be) as i16))
                    .ok_or_else(bad)?,
            ),
            TorchDtype::I8 => TensorData::I64(
                view.gather(|b| i64::from(b.first().copied().unwrap_or(0) as i8))
                    .ok_or_else(bad)?,
            ),
            TorchDtype::U8 => TensorData::I64(
                view.gather(|b| i64::from(b.first().copied().unwrap_or(0)))
                    .ok_or_else(bad)?,
            ),
            TorchDtype::Bool => TensorData::I64(
                view.gather(|b| i64::from(b.first().is_some_and(|&x| x != 0)))
                    .ok_or_else(bad)?,
            ),
        };
        Ok(TorchTensor {
            shape: t.shape.clone(),
            data,
            dtype,
        })
    }
}

fn u16_of(b: &[u8], be: bool) -> u16 {
    let a = array::<2>(b);
    if be {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
    }
}

/// A strided view of a storage, already checked to be in bounds.
struct View<'b> {
    bytes: &'b [u8],
    es: usize,
    base: usize,
    shape: &'b [usize],
    stride: &'b [usize],
    numel: usize,
}

impl View<'_> {
    fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&d, &s) in self.shape.iter().zip(self.stride).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected = expected.saturating_mul(d);
        }
        true
    }

    /// Decodes the elements in row-major order; `None` only if an index is out
    /// of range, which the caller's bounds check rules out.
    fn gather<T>(&self, decode: impl Fn(&[u8]) -> T) -> Option<Vec<T>> {
        if self.numel == 0 {
            return Some(Vec::new());
        }
        if self.is_contiguous() {
            let start = self.base.checked_mul(self.es)?;
            let end = self.base.checked_add(self.numel)?.checked_mul(self.es)?;
            let bytes = self.bytes.get(start..end)?;
            return Some(bytes.chunks_exact(self.es).map(decode).collect());
        }
        let ndim = self.shape.len();
        let mut out = Vec::with_capacity(self.numel);
        let mut index = vec![0usize; ndim];
        let mut linear = self.base;
        for _ in 0..self.numel {
            let start = linear.checked_mul(self.es)?;
            out.push(decode(self.bytes.get(start..start.checked_add(self.es)?)?));
            // Odometer increment; wrapping arithmetic is exact here because
            // every index actually visited is in bounds.
            let mut d = ndim;
            while d > 0 {
                d -= 1;
                index[d] += 1;
                linear = linear.wrapping_add(self.stride[d]);
                if index[d] < self.shape[d] {
                    break;
                }
                linear = linear.wrapping_sub(self.stride[d].wrapping_mul(self.shape[d]));
                index[d] = 0;
            }
        }
        Some(out)
    }
}

// ---------------------------------------------------------------------------
// Legacy format

fn parse_legacy(bytes: &[u8]) -> Result<Checkpoint<'_>> {
    const STREAM: &str = "legacy file";
    let mut decls = BTreeMap::new();
    let not_ckpt = |what: String| TorchError::NotACheckpoint(what);

    let (magic, pos) = Vm::new(bytes, 0, STREAM, &mut decls).run()?;
    match magic.nodes.get(magic.root) {
        Some(Node::Int(LEGACY_MAGIC)) => {}
        _ => {
            return Err(not_ckpt(format!(
                "the first pickle is not the legacy torch magic number 0x{LEGACY_MAGIC:x}"
            )))
        }
    }
    let (version, pos) = Vm::new(bytes, pos, STREAM, &mut decls).run()?;
    match version.nodes.get(version.root) {
        Some(Node::Int(LEGACY_PROTOCOL_VERSION)) => {}
        Some(Node::Int(v)) => {
            return Err(not_ckpt(format!(
                "legacy protocol version {v} is not supported (expected {LEGACY_PROTOCOL_VERSION})"
            )))
        }
        _ => {
            return Err(not_ckpt(
                "the second pickle is not a protocol version".to_string(),
            ))
        }
    }
    let (sys_info, pos) = Vm::new(bytes, pos, STREAM, &mut decls).run()?;
    let big_endian = match sys_info.nodes.get(sys_info.root) {
        Some(Node::Dict(items)) => items.iter().any(|&(k, v)| {
            matches!(sys_info.nodes.get(k), Some(Node::Str(s)) if s == "little_endian")
                && matches!(sys_info.nodes.get(v), Some(Node::Bool(false)))
        }),
        _ => {
            return Err(not_ckpt(
                "the third pickle (sys_info) is not a dict".to_string(),
            ))
        }
    };

    let main_start = pos;
    let (main, pos) = Vm::new(bytes, pos, STREAM, &mut decls).run()?;
    let mut no_decls = BTreeMap::new();
    let keys_start = pos;
    let (keys, mut pos) = Vm::new(bytes, pos, STREAM, &mut no_decls).run()?;
    let key_ids: &[NodeId] = match keys.nodes.get(keys.root) {
        Some(Node::List(ids)) | Some(Node::Tuple(ids)) => ids,
        _ => {
            return Err(not_ckpt(format!(
                "the storage key list pickle at byte {keys_start} is not a list"
            )))
        }
    };
    log::debug!(
        "legacy checkpoint: object pickle at {main_start}, {} storages, data at {pos}",
        key_ids.len()
    );

    let mut storages = HashMap::new();
    let mut storage_bytes = 0usize;
    for &kid in key_ids {
        let key = match keys.nodes.get(kid) {
            Some(Node::Str(s)) => s.clone(),
            _ => {
                return Err(not_ckpt(format!(
                    "storage key list at byte {keys_start} holds a non-str item"
                )))
            }
        };
        let decl = decls.get(&key).ok_or_else(|| TorchError::Storage {
            key: key.clone(),
            message: "listed in the file but not referenced by any tensor".to_string(),
        })?;
        if storages.contains_key(&key) {
            return Err(TorchError::Storage {
                key,
                message: "listed twice in the storage key list".to_string(),
            });
        }
        let available = bytes.len().saturating_sub(pos);
        let header = bytes
            .get(pos..pos.saturating_add(8))
            .filter(|h| h.len() == 8)
            .ok_or_else(|| TorchError::Truncated {
                what: format!("element count of storage '{key}'"),
                needed: 8,
                offset: pos as u64,
                available: available as u64,
            })?;
        let raw = array::<8>(header);
        let count = if big_endian {
            i64::from_be_bytes(raw)
        } else {
            i64::from_le_bytes(raw)
        };
        pos += 8;
        let available = bytes.len().saturating_sub(pos);
        let es = decl.kind.element_size();
        let count = u64::try_from(count).map_err(|_| TorchError::Storage {
            key: key.clone(),
            message: format!("negative element count {count} at offset {}", pos - 8),
        })?;
        let nbytes = count.checked_mul(es as u64);
        let data = nbytes
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n <= available)
            .and_then(|n| bytes.get(pos..pos + n))
            .ok_or_else(|| TorchError::Truncated {
                what: format!("storage '{key}'"),
                needed: nbytes.unwrap_or(u64::MAX),
                offset: pos as u64,
                available: available as u64,
            })?;
        if count != decl.numel {
            log::debug!(
                "storage '{key}': {count} elements in the data, {} in the pickle",
                decl.numel
            );
        }
        pos += data.len();
        storage_bytes = storage_bytes.saturating_add(data.len());
        storages.insert(
            key,
            StorageData {
                kind: decl.kind,
                bytes: Cow::Borrowed(data),
            },
        );
    }
    if pos < bytes.len() {
        log::debug!(
            "legacy checkpoint: {} trailing bytes ignored",
            bytes.len() - pos
        );
    }
    Ok(Checkpoint {
        format: CheckpointFormat::Legacy,
        nodes: main.nodes,
        root: main.root,
        storages,
        big_endian,
        storage_bytes,
    })
}

// ---------------------------------------------------------------------------
// Zip format

fn zip_err(context: &str, e: impl std::fmt::Display) -> TorchError {
    TorchError::Zip(format!("{context}: {e}"))
}

/// Reads one archive entry, borrowing it from `whole` when it is stored
/// uncompressed (what torch writes).
fn read_entry<'a>(
    archive: &mut zip::ZipArchive<Cursor<&'a [u8]>>,
    whole: &'a [u8],
    index: usize,
    name: &str,
) -> Result<Cow<'a, [u8]>> {
    let (method, start, compressed, size) = {
        let entry = archive
            .by_index_raw(index)
            .map_err(|e| zip_err(&format!("entry '{name}'"), e))?;
        if entry.encrypted() {
            return Err(TorchError::Zip(format!("entry '{name}' is encrypted")));
        }
        (
            entry.compression(),
            entry.data_start(),
            entry.compressed_size(),
            entry.size(),
        )
    };
    if method == zip::CompressionMethod::Stored {
        if compressed != size {
            return Err(TorchError::Zip(format!(
                "stored entry '{name}' has compressed size {compressed} != size {size}"
            )));
        }
        let available = (whole.len() as u64).saturating_sub(start);
        let data = usize::try_from(start)
            .ok()
            .zip(usize::try_from(size).ok())
            .and_then(|(s, n)| whole.get(s..s.checked_add(n)?))
            .ok_or_else(|| TorchError::Truncated {
                what: format!("zip entry '{name}'"),
                needed: size,
                offset: start,
                available,
            })?;
        return Ok(Cow::Borrowed(data));
    }
    // Deflate can expand at most ~1032:1; anything claiming more is corrupt.
    let limit = compressed.saturating_mul(1032).saturating_add(1024);
    if size > limit {
        return Err(TorchError::Zip(format!(
            "entry '{name}' claims {size} bytes from {compressed} compressed bytes"
        )));
    }
    let entry = archive
        .by_index(index)
        .map_err(|e| zip_err(&format!("entry '{name}'"), e))?;
    let capacity = usize::try_from(size.min(whole.len() as u64 * 4)).unwrap_or(0);
    let mut out = Vec::with_capacity(capacity);
    entry
        .take(size)
        .read_to_end(&mut out)
        .map_err(|e| zip_err(&format!("decompressing entry '{name}'"), e))?;
    if out.len() as u64 != size {
        return Err(TorchError::Zip(format!(
            "entry '{name}' decompressed to {} bytes, header says {size}",
            out.len()
        )));
    }
    Ok(Cow::Owned(out))
}

fn parse_zip(bytes: &[u8]) -> Result<Checkpoint<'_>> {
    let mut archive =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| zip_err("opening", e))?;
    // torch writes `<prefix>/data.pkl`; pick the shallowest data.pkl.
    let (pkl_index, pkl_name) = (0..archive.len())
        .filter_map(|i| archive.name_for_index(i).map(|n| (i, n.to_string())))
        .filter(|(_, n)| n == "data.pkl" || n.ends_with("/data.pkl"))
        .min_by_key(|(i, n)| (n.matches('/').count(), *i))
        .ok_or_else(|| {
            TorchError::NotACheckpoint(
                "zip archive has no data.pkl (not written by torch.save?)".to_string(),
            )
        })?;
    let prefix = pkl_name
        .strip_suffix("data.pkl")
        .unwrap_or_default()
        .to_string();

    let big_endian = match archive.index_for_name(&format!("{prefix}byteorder")) {
        None => false,
        Some(i) => {
            let name = format!("{prefix}byteorder");
            let order = read_entry(&mut archive, bytes, i, &name)?;
            match order.trim_ascii() {
                b"little" => false,
                b"big" => true,
                other => {
                    return Err(TorchError::Zip(format!(
                        "entry '{name}' holds {:?}, expected 'little' or 'big'",
                        String::from_utf8_lossy(other)
                    )))
                }
            }
        }
    };

    let pkl = read_entry(&mut archive, bytes, pkl_index, &pkl_name)?;
    let mut decls = BTreeMap::new();
    let (main, _end) = Vm::new(&pkl, 0, "data.pkl", &mut decls).run()?;

    let mut storages = HashMap::new();
    let mut storage_bytes = 0usize;
    for (key, decl) in decls {
        let name = format!("{prefix}data/{key}");
        let index = archive
            .index_for_name(&name)
            .ok_or_else(|| TorchError::Storage {
                key: key.clone(),
                message: format!("referenced by data.pkl but entry '{name}' is missing"),
            })?;
        let data = read_entry(&mut archive, bytes, index, &name)?;
        let es = decl.kind.element_size();
        if data.len() % es != 0 {
            return Err(TorchError::Storage {
                key,
                message: format!(
                    "entry '{name}' has {} bytes, not a multiple of the {es}-byte {} element",
                    data.len(),
                    decl.kind.name()
                ),
            });
        }
        if (data.len() / es) as u64 != decl.numel {
            log::debug!(
                "storage '{key}': {} elements in '{name}', {} in data.pkl",
                data.len() / es,
                decl.numel
            );
        }
        storage_bytes = storage_bytes.saturating_add(data.len());
        storages.insert(
            key,
            StorageData {
                kind: decl.kind,
                bytes: data,
            },
        );
    }
    Ok(Checkpoint {
        format: CheckpointFormat::Zip,
        nodes: main.nodes,
        root: main.root,
        storages,
        big_endian,
        storage_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a protocol-2 pickle byte string.
    fn pickle(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![0x80, 2];
        for p in parts {
            out.extend_from_slice(p);
        }
        out.push(b'.');
        out
    }

    fn run(bytes: &[u8]) -> Result<Pickled> {
        let mut decls = BTreeMap::new();
        Vm::new(bytes, 0, "test", &mut decls).run().map(|(p, _)| p)
    }

    #[test]
    fn nodes_stay_small() {
        // MAX_NODES is sized for 32-byte nodes.
        assert!(std::mem::size_of::<Node>() <= 32);
    }

    #[test]
    fn long1_decodes_magic_and_negatives() {
        let magic = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
        assert!(matches!(decode_long(&magic), Node::Int(LEGACY_MAGIC)));
        assert!(matches!(decode_long(&[0xff]), Node::Int(-1)));
        assert!(matches!(decode_long(&[]), Node::Int(0)));
        assert!(matches!(decode_long(&[0; 17]), Node::BigInt));
    }

    #[test]
    fn unknown_opcode_is_named() {
        let err = run(&pickle(&[b"\xff"])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("0xff") && msg.contains("byte 2"), "{msg}");
    }

    #[test]
    fn memo_and_marks_are_checked() {
        let err = run(&pickle(&[b"h\x05"])).unwrap_err().to_string();
        assert!(err.contains("memo key 5"), "{err}");
        // POP below a MARK is a stack underflow, like Python 3.
        let err = run(&pickle(&[b"N(0"])).unwrap_err().to_string();
        assert!(err.contains("underflow"), "{err}");
        let err = run(&pickle(&[b"Nt"])).unwrap_err().to_string();
        assert!(err.contains("no MARK"), "{err}");
    }

    #[test]
    fn huge_lengths_are_truncation_errors() {
        let err = run(&[
            0x80, 2, 0x8d, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ])
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("truncated:"), "{err}");
        let err = run(&[0x80, 2, b'X', 0xff, 0xff, 0xff, 0x7f, b'a'])
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs 2147483647 bytes at offset 7"), "{err}");
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        // 200k nested 1-tuples: parsing and dropping must not overflow the stack.
        let mut bytes = vec![0x80, 2, b'N'];
        bytes.extend(std::iter::repeat_n(0x85, 200_000));
        bytes.push(b'.');
        let p = run(&bytes).unwrap();
        assert_eq!(p.nodes.len(), 200_001);
    }

    #[test]
    fn self_referencing_list_is_fine() {
        // l = []; l.append(l)
        let p = run(&pickle(&[b"]q\x00h\x00a"])).unwrap();
        assert!(matches!(&p.nodes[p.root], Node::List(items) if items == &[p.root]));
    }

    /// A synthetic legacy file whose tensor is a legacy storage *view*
    /// (`view_metadata` = (key, offset 2, size 3)) into a 6-element root
    /// storage holding 0..6, in either byte order.
    fn legacy_view_file(big_endian: bool, tensor_len: u8) -> Vec<u8> {
        fn ustr(out: &mut Vec<u8>, s: &str) {
            out.push(b'X');
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        let mut f = Vec::new();
        f.extend_from_slice(&[0x80, 2, 0x8a, 10]);
        f.extend_from_slice(&[0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]);
        f.extend_from_slice(b".\x80\x02M\xe9\x03.\x80\x02}(");
        ustr(&mut f, "little_endian");
        f.extend_from_slice(if big_endian { b"\x89u." } else { b"\x88u." });
        f.extend_from_slice(b"\x80\x02}(");
        ustr(&mut f, "w");
        f.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        ustr(&mut f, "storage");
        f.extend_from_slice(b"ctorch\nFloatStorage\n");
        ustr(&mut f, "root");
        ustr(&mut f, "cpu");
        f.extend_from_slice(b"K\x06(");
        ustr(&mut f, "view0");
        f.extend_from_slice(b"K\x02K\x03ttQK\x01K");
        f.push(tensor_len);
        f.extend_from_slice(b"\x85K\x01\x85\x89}tRu.\x80\x02](");
        ustr(&mut f, "root");
        f.extend_from_slice(b"e.");
        let count = 6i64;
        f.extend_from_slice(&if big_endian {
            count.to_be_bytes()
        } else {
            count.to_le_bytes()
        });
        for v in 0..6 {
            let v = v as f32;
            f.extend_from_slice(&if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            });
        }
        f
    }

    #[test]
    fn legacy_storage_views_and_byte_order() {
        for big_endian in [false, true] {
            let bytes = legacy_view_file(big_endian, 2);
            let ckpt = Checkpoint::parse(&bytes).unwrap();
            assert_eq!(ckpt.format(), CheckpointFormat::Legacy);
            let sd = ckpt.state_dict().unwrap();
            assert_eq!(sd["w"].shape, vec![2]);
            assert_eq!(
                sd["w"].as_f32(),
                Some(&[3.0f32, 4.0][..]),
                "big_endian={big_endian}"
            );
            for len in 0..bytes.len() {
                assert!(read_state_dict(&bytes[..len]).is_err(), "prefix {len}");
            }
        }
        // Offset 1 + 3 elements does not fit the 3-element view.
        let err = read_state_dict(&legacy_view_file(false, 3))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("tensor 'w':") && err.contains("reaches past"),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_not_a_checkpoint() {
        let err = Checkpoint::parse(b"hello world").unwrap_err().to_string();
        assert!(err.contains("not a PyTorch checkpoint"), "{err}");
        assert!(Checkpoint::parse(b"").is_err());
    }
}
