//! A minimal, read-only look into an ONNX model file: which operators its
//! graph uses and what its inputs are called.
//!
//! Used before a graph is handed to ONNX Runtime, to tell an *unlowered*
//! training graph (training-only operators such as `ReluGrad` or
//! `InPlaceAccumulatorV2`, gradient accumulation buffers as inputs) apart
//! from a lowered one, and to name every offending operator in the error.
//! It decodes only the few protobuf fields it needs (`ModelProto.graph`,
//! `GraphProto.node/input`, `NodeProto.op_type/domain`, sub-graphs in node
//! attributes) from the wire format, skipping everything else; pulling in a
//! full protobuf toolchain for this would be out of proportion. Every length
//! is bounds-checked, and nesting is limited.

use std::collections::BTreeSet;

/// Operator types that only training builds of ONNX Runtime implement.
const TRAINING_OPS: &[&str] = &[
    "InPlaceAccumulator",
    "InPlaceAccumulatorV2",
    "ZeroGradient",
    "Gradient",
    "GradientGraph",
    "SoftmaxCrossEntropyLossInternal",
    "SoftmaxCrossEntropyLossInternalGrad",
    "SoftmaxCrossEntropyGrad",
    "SparseSoftmaxCrossEntropyGrad",
    "BroadcastGradientArgs",
    "AdamWOptimizer",
    "AdamOptimizer",
    "SGDOptimizer",
    "SGDOptimizerV2",
    "LambOptimizer",
    "YieldOp",
    "PassThrough",
];

/// Graph input name patterns that only unlowered training graphs have.
const TRAINING_INPUT_SUFFIX: &str = ".accumulation.buffer";
const TRAINING_INPUT_NAMES: &[&str] = &["lazy_reset_grad"];

/// Sub-graphs deeper than this are rejected (protects the stack).
const MAX_DEPTH: usize = 16;

/// What the scan found in a model.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GraphSummary {
    /// `domain::op_type` (domain empty for the default ONNX domain) of every
    /// node, sub-graphs included, deduplicated.
    pub operators: BTreeSet<(String, String)>,
    /// Names of the main graph's inputs, in order.
    pub inputs: Vec<String>,
}

impl GraphSummary {
    /// The training-only operators and inputs in this graph, for an error
    /// message; empty when the graph is lowered.
    pub fn training_leftovers(&self) -> Vec<String> {
        let mut found: Vec<String> = self
            .operators
            .iter()
            .filter(|(domain, op)| is_training_op(domain, op))
            .map(|(domain, op)| {
                if domain.is_empty() {
                    op.clone()
                } else {
                    format!("{domain}::{op}")
                }
            })
            .collect();
        found.extend(
            self.inputs
                .iter()
                .filter(|name| {
                    name.ends_with(TRAINING_INPUT_SUFFIX)
                        || TRAINING_INPUT_NAMES.contains(&name.as_str())
                })
                .map(|name| format!("input `{name}`")),
        );
        found
    }
}

/// Whether an operator exists only in training builds: the listed ones, and
/// every `*Grad` kernel (`ReluGrad`, `ConvGrad`, `MaxPoolGrad`, ...), whatever
/// the domain — `MaxPoolGrad` sits in the default domain.
fn is_training_op(domain: &str, op: &str) -> bool {
    let known_domain = domain.is_empty()
        || domain == "ai.onnx"
        || domain == "com.microsoft"
        || domain == "com.ms.internal.nhwc";
    known_domain && (op.ends_with("Grad") || TRAINING_OPS.contains(&op))
}

/// Scans a serialized `ModelProto`.
pub fn scan_model(bytes: &[u8]) -> Result<GraphSummary, String> {
    let mut summary = GraphSummary::default();
    let mut saw_graph = false;
    for field in Fields::new(bytes) {
        let (number, value) = field?;
        if number == 7 {
            let graph = value.bytes("ModelProto.graph")?;
            scan_graph(graph, &mut summary, 0, true)?;
            saw_graph = true;
        }
    }
    if !saw_graph {
        return Err("the file has no graph (is it an ONNX model?)".into());
    }
    Ok(summary)
}

fn scan_graph(bytes: &[u8], out: &mut GraphSummary, depth: usize, top: bool) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("sub-graphs nested deeper than {MAX_DEPTH}"));
    }
    for field in Fields::new(bytes) {
        let (number, value) = field?;
        match number {
            1 => scan_node(value.bytes("GraphProto.node")?, out, depth)?,
            11 if top => {
                let info = value.bytes("GraphProto.input")?;
                for field in Fields::new(info) {
                    let (number, value) = field?;
                    if number == 1 {
                        out.inputs.push(value.string("ValueInfoProto.name")?);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn scan_node(bytes: &[u8], out: &mut GraphSummary, depth: usize) -> Result<(), String> {
    let (mut op, mut domain) = (String::new(), String::new());
    for field in Fields::new(bytes) {
        let (number, value) = field?;
        match number {
            4 => op = value.string("NodeProto.op_type")?,
            7 => domain = value.string("NodeProto.domain")?,
            5 => {
                // AttributeProto: g = 6 (one graph), graphs = 11 (many).
                for field in Fields::new(value.bytes("NodeProto.attribute")?) {
                    let (number, value) = field?;
                    if number == 6 || number == 11 {
                        scan_graph(value.bytes("AttributeProto.g")?, out, depth + 1, false)?;
                    }
                }
            }
            _ => {}
        }
    }
    out.operators.insert((domain, op));
    Ok(())
}

/// A field value in protobuf wire format.
enum Value<'a> {
    Varint,
    Fixed,
    Bytes(&'a [u8]),
}

impl<'a> Value<'a> {
    fn bytes(self, what: &str) -> Result<&'a [u8], String> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err(format!("{what} has the wrong wire type")),
        }
    }

    fn string(self, what: &str) -> Result<String, String> {
        let bytes = self.bytes(what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }
}

/// Iterator over the top-level fields of one protobuf message.
struct Fields<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Fields {
            rest: bytes,
            failed: false,
        }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self
                .rest
                .split_first()
                .ok_or_else(|| "truncated varint".to_string())?;
            self.rest = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let n = usize::try_from(n).map_err(|_| "length overflows".to_string())?;
        if n > self.rest.len() {
            return Err(format!(
                "field of {n} bytes but only {} left",
                self.rest.len()
            ));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn next_field(&mut self) -> Result<(u64, Value<'a>), String> {
        let key = self.varint()?;
        let number = key >> 3;
        let value = match key & 7 {
            0 => {
                self.varint()?;
                Value::Varint
            }
            1 => {
                self.take(8)?;
                Value::Fixed
            }
            2 => {
                let len = self.varint()?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed
            }
            other => return Err(format!("unsupported protobuf wire type {other}")),
        };
        Ok((number, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let item = self.next_field();
        self.failed = item.is_err();
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protobuf encoders for building test models by hand.
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(number: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    fn node(op: &str, domain: &str) -> Vec<u8> {
        let mut n = Vec::new();
        bytes_field(1, b"x", &mut n); // input
        bytes_field(4, op.as_bytes(), &mut n);
        if !domain.is_empty() {
            bytes_field(7, domain.as_bytes(), &mut n);
        }
        n
    }

    fn model(nodes: &[Vec<u8>], inputs: &[&str]) -> Vec<u8> {
        let mut g = Vec::new();
        for n in nodes {
            bytes_field(1, n, &mut g);
        }
        bytes_field(2, b"graph", &mut g);
        for name in inputs {
            let mut info = Vec::new();
            bytes_field(1, name.as_bytes(), &mut info);
            bytes_field(11, &info, &mut g);
        }
        let mut m = Vec::new();
        varint(1 << 3, &mut m); // ir_version, varint
        varint(8, &mut m);
        bytes_field(7, &g, &mut m);
        m
    }

    #[test]
    fn lowered_graph_has_no_leftovers() {
        let m = model(
            &[node("Gemm", ""), node("Where", "")],
            &["input", "fc1.weight"],
        );
        let s = scan_model(&m).unwrap();
        assert_eq!(s.inputs, vec!["input", "fc1.weight"]);
        assert!(s.training_leftovers().is_empty());
    }

    #[test]
    fn training_ops_and_inputs_are_named() {
        let m = model(
            &[
                node("Gemm", ""),
                node("ReluGrad", "com.microsoft"),
                node("MaxPoolGrad", ""),
                node("InPlaceAccumulatorV2", "com.microsoft"),
            ],
            &[
                "input",
                "fc1.weight_grad.accumulation.buffer",
                "lazy_reset_grad",
            ],
        );
        let found = scan_model(&m).unwrap().training_leftovers();
        assert_eq!(
            found,
            vec![
                "MaxPoolGrad",
                "com.microsoft::InPlaceAccumulatorV2",
                "com.microsoft::ReluGrad",
                "input `fc1.weight_grad.accumulation.buffer`",
                "input `lazy_reset_grad`"
            ]
        );
    }

    #[test]
    fn sub_graph_operators_are_seen() {
        let mut attr = Vec::new();
        let inner = {
            let mut g = Vec::new();
            bytes_field(1, &node("ConvGrad", "com.microsoft"), &mut g);
            g
        };
        bytes_field(6, &inner, &mut attr);
        let mut if_node = node("If", "");
        bytes_field(5, &attr, &mut if_node);
        let s = scan_model(&model(&[if_node], &[])).unwrap();
        assert_eq!(s.training_leftovers(), vec!["com.microsoft::ConvGrad"]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(scan_model(b"this is not a model").is_err());
        assert!(scan_model(&[]).is_err());
        let mut m = model(&[node("Gemm", "")], &[]);
        m.truncate(m.len() - 3);
        assert!(scan_model(&m).is_err());
        assert!(scan_model(&[0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}
