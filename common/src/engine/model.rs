//! An artifact folder loaded into ONNX Runtime: the lowered training graph
//! and the eval graph as sessions, checked against `manifest.json`.
//!
//! Loading refuses, with an error naming the problem, a folder whose graphs
//! are missing, unlowered (training-only operators left), or disagree with
//! the manifest (an input, output, parameter shape or dtype that does not
//! match). Running feeds the caller's buffers to ONNX Runtime as borrowed
//! tensor views — no copy of data or parameters — and hands back the
//! session outputs, resolved to positions once at load time.

use std::path::{Path, PathBuf};

use ort::session::{Session, SessionInputValue, SessionOutputs};
use ort::value::{TensorElementType, TensorRef, ValueType};

use super::batch::Batch;
use super::config::EngineConfig;
use super::error::{EngineError, Result};
use super::graph_scan;
use super::manifest::{Manifest, TensorSpec};
use super::runtime;

/// What one graph input is fed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    /// The batch's data input number `i` (manifest order).
    Data(usize),
    /// The labels.
    Label,
    /// Parameter number `j` (manifest order).
    Parameter(usize),
}

/// A session and how to feed it.
#[derive(Debug)]
struct Graph {
    path: PathBuf,
    session: Session,
    /// One entry per session input, in session order.
    feeds: Vec<Feed>,
}

/// A loaded, validated artifact folder.
#[derive(Debug)]
pub struct Model {
    dir: PathBuf,
    manifest: Manifest,
    train: Graph,
    eval: Graph,
    /// Parameter shapes as ONNX Runtime wants them.
    parameter_shapes: Vec<Vec<i64>>,
    /// Training outputs: the loss position, and each parameter's gradient position.
    train_loss: usize,
    train_gradients: Vec<usize>,
    /// Eval outputs: loss and logits positions.
    eval_loss: usize,
    eval_logits: usize,
    initial_parameters: Vec<f32>,
}

impl Model {
    /// Loads `<dir>/manifest.json` and the graphs and parameters it names.
    pub fn load(dir: &Path, config: &EngineConfig) -> Result<Model> {
        let manifest = Manifest::load(dir)?;
        let rt = runtime::runtime(config.ort_library.as_deref())?;

        let initial_path = dir.join(&manifest.initial_parameters);
        let initial_parameters = read_parameters(&initial_path, manifest.parameter_count())?;

        let train_path = dir.join(&manifest.training_graph);
        let eval_path = dir.join(&manifest.eval_graph);
        let train = open_graph(&rt.environment, &train_path, config, &manifest)?;
        let eval = open_graph(&rt.environment, &eval_path, config, &manifest)?;

        let train_loss = output_position(&train, &manifest.train_outputs.loss)?;
        check_scalar_output(&train, train_loss)?;
        let mut train_gradients = Vec::with_capacity(manifest.parameters.len());
        for p in &manifest.parameters {
            let grad = manifest
                .train_outputs
                .gradients
                .iter()
                .find(|g| g.parameter == p.name)
                .map(|g| g.output.as_str())
                .unwrap_or_default();
            let pos = output_position(&train, grad)?;
            check_output_shape(&train, pos, &p.shape, &format!("gradient of `{}`", p.name))?;
            train_gradients.push(pos);
        }
        let eval_loss = output_position(&eval, &manifest.eval_outputs.loss)?;
        check_scalar_output(&eval, eval_loss)?;
        let eval_logits = output_position(&eval, &manifest.eval_outputs.logits)?;
        let classes = i64::try_from(manifest.num_classes).unwrap_or(i64::MAX);
        check_output_shape(&eval, eval_logits, &[-1, classes], "logits")?;

        let parameter_shapes = manifest
            .parameters
            .iter()
            .map(|p| p.shape.clone())
            .collect();
        Ok(Model {
            dir: dir.to_path_buf(),
            manifest,
            train,
            eval,
            parameter_shapes,
            train_loss,
            train_gradients,
            eval_loss,
            eval_logits,
            initial_parameters,
        })
    }

    /// The artifact folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The parameters the artifacts start from (flat, manifest order).
    pub fn initial_parameters(&self) -> &[f32] {
        &self.initial_parameters
    }

    /// Runs the training graph on a validated batch with `params`.
    pub(crate) fn run_training(&mut self, batch: &Batch, params: &[f32]) -> Result<TrainRun<'_>> {
        let Model {
            manifest,
            train,
            parameter_shapes,
            train_loss,
            train_gradients,
            ..
        } = self;
        let outputs = run_graph(
            train,
            manifest,
            parameter_shapes,
            batch,
            params,
            "running the training graph",
        )?;
        Ok(TrainRun {
            outputs,
            loss: *train_loss,
            gradients: train_gradients,
        })
    }

    /// Runs the eval graph on a validated batch; returns outputs and the
    /// positions of loss and logits.
    pub(crate) fn run_eval(
        &mut self,
        batch: &Batch,
        params: &[f32],
    ) -> Result<(SessionOutputs<'_>, usize, usize)> {
        let (loss, logits) = (self.eval_loss, self.eval_logits);
        let Model {
            manifest,
            eval,
            parameter_shapes,
            ..
        } = self;
        let outputs = run_graph(
            eval,
            manifest,
            parameter_shapes,
            batch,
            params,
            "running the eval graph",
        )?;
        Ok((outputs, loss, logits))
    }
}

/// The outputs of one training-graph run.
pub(crate) struct TrainRun<'s> {
    pub outputs: SessionOutputs<'s>,
    pub loss: usize,
    /// Output position of each parameter's gradient (manifest order).
    pub gradients: &'s [usize],
}

impl TrainRun<'_> {
    /// The scalar loss.
    pub fn loss(&self) -> Result<f32> {
        scalar(&self.outputs, self.loss, "loss")
    }

    /// The gradient of parameter `j`, checked to hold `numel` values.
    pub fn gradient(&self, j: usize, numel: usize) -> Result<&[f32]> {
        let (_, data) = self.outputs[self.gradients[j]]
            .try_extract_tensor::<f32>()
            .map_err(|e| EngineError::runtime("reading a gradient", e))?;
        if data.len() != numel {
            return Err(EngineError::Runtime {
                context: "reading a gradient".into(),
                message: format!(
                    "gradient output {} holds {} values, the parameter {numel}",
                    self.gradients[j],
                    data.len()
                ),
            });
        }
        Ok(data)
    }
}

/// Reads a scalar `f32` output.
pub(crate) fn scalar(outputs: &SessionOutputs<'_>, pos: usize, what: &str) -> Result<f32> {
    let (_, data) = outputs[pos]
        .try_extract_tensor::<f32>()
        .map_err(|e| EngineError::runtime(format!("reading the {what}"), e))?;
    data.first().copied().ok_or_else(|| EngineError::Runtime {
        context: format!("reading the {what}"),
        message: "the output is empty".into(),
    })
}

fn run_graph<'s>(
    graph: &'s mut Graph,
    manifest: &Manifest,
    parameter_shapes: &[Vec<i64>],
    batch: &Batch,
    params: &[f32],
    context: &str,
) -> Result<SessionOutputs<'s>> {
    let n = batch.len();
    let n_i64 = i64::try_from(n).unwrap_or(i64::MAX);
    let mut inputs: Vec<SessionInputValue<'_>> = Vec::with_capacity(graph.feeds.len());
    for feed in &graph.feeds {
        let value: SessionInputValue<'_> = match *feed {
            Feed::Data(i) => {
                let shape = manifest.inputs[i].batch_shape(n);
                TensorRef::from_array_view((shape, batch.inputs()[i])).map(Into::into)
            }
            Feed::Label => TensorRef::from_array_view(([n_i64], batch.labels())).map(Into::into),
            Feed::Parameter(j) => {
                let range = manifest.parameters[j].range();
                TensorRef::from_array_view((parameter_shapes[j].as_slice(), &params[range]))
                    .map(Into::into)
            }
        }
        .map_err(|e| EngineError::runtime(format!("{context} (creating an input tensor)"), e))?;
        inputs.push(value);
    }
    graph
        .session
        .run(inputs.as_slice())
        .map_err(|e| EngineError::runtime(format!("{context} {}", graph.path.display()), e))
}

/// Reads the flat parameter file and checks its size.
fn read_parameters(path: &Path, count: usize) -> Result<Vec<f32>> {
    let bytes = EngineError::read_artifact(path)?;
    // u128: a manifest may declare up to usize::MAX parameters.
    if bytes.len() as u128 != count as u128 * 4 {
        return Err(EngineError::ManifestMismatch {
            path: path.to_path_buf(),
            reason: format!(
                "holds {} bytes, the manifest's {count} parameters need {}",
                bytes.len(),
                count as u128 * 4
            ),
        });
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Scans, opens and matches one graph against the manifest.
fn open_graph(
    env: &ort::environment::Environment,
    path: &Path,
    config: &EngineConfig,
    manifest: &Manifest,
) -> Result<Graph> {
    let bytes = EngineError::read_artifact(path)?;
    let summary = graph_scan::scan_model(&bytes).map_err(|reason| EngineError::ModelInvalid {
        path: path.to_path_buf(),
        reason,
    })?;
    let leftovers = summary.training_leftovers();
    if !leftovers.is_empty() {
        return Err(EngineError::Unlowered {
            path: path.to_path_buf(),
            found: leftovers,
        });
    }
    drop(bytes);

    let context = format!("opening {}", path.display());
    let mut builder = Session::builder(env).map_err(|e| EngineError::runtime(&context, e))?;
    if config.intra_op_threads > 0 {
        builder = builder
            .with_intra_threads(config.intra_op_threads)
            .map_err(|e| EngineError::runtime(&context, e))?;
    }
    let session = builder
        .commit_from_file(path)
        .map_err(|e| EngineError::runtime(&context, e))?;

    let feeds = plan_feeds(&session, manifest).map_err(|reason| EngineError::ManifestMismatch {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(Graph {
        path: path.to_path_buf(),
        session,
        feeds,
    })
}

/// Maps every session input to what feeds it, checking names, dtypes and
/// static shapes, and that every manifest input and parameter is used.
fn plan_feeds(session: &Session, manifest: &Manifest) -> std::result::Result<Vec<Feed>, String> {
    let mut feeds = Vec::with_capacity(session.inputs().len());
    let mut unknown = Vec::new();
    for input in session.inputs() {
        let name = input.name();
        let (feed, dtype, shape, what) =
            if let Some(i) = manifest.inputs.iter().position(|s| s.name == name) {
                let spec: &TensorSpec = &manifest.inputs[i];
                (
                    Feed::Data(i),
                    TensorElementType::Float32,
                    spec.shape.clone(),
                    "data input",
                )
            } else if manifest.label.name == name {
                (
                    Feed::Label,
                    TensorElementType::Int64,
                    vec![-1],
                    "label input",
                )
            } else if let Some(j) = manifest.parameters.iter().position(|p| p.name == name) {
                let shape = manifest.parameters[j].shape.clone();
                (
                    Feed::Parameter(j),
                    TensorElementType::Float32,
                    shape,
                    "parameter",
                )
            } else {
                unknown.push(format!("graph input `{name}` is not in the manifest"));
                continue;
            };
        match input.dtype() {
            ValueType::Tensor {
                ty,
                shape: graph_shape,
                ..
            } => {
                if *ty != dtype {
                    return Err(format!(
                        "{what} `{name}`: the graph wants {ty:?}, the manifest says {dtype:?}"
                    ));
                }
                if !shapes_compatible(graph_shape, &shape) {
                    return Err(format!(
                        "{what} `{name}`: the graph's shape is {:?}, the manifest's {shape:?}",
                        graph_shape.iter().collect::<Vec<_>>()
                    ));
                }
            }
            other => return Err(format!("{what} `{name}` is a {other}, not a tensor")),
        }
        feeds.push(feed);
    }
    let mut missing = Vec::new();
    for (i, spec) in manifest.inputs.iter().enumerate() {
        if !feeds.contains(&Feed::Data(i)) {
            missing.push(format!("data input `{}`", spec.name));
        }
    }
    if !feeds.contains(&Feed::Label) {
        missing.push(format!("label `{}`", manifest.label.name));
    }
    for (j, p) in manifest.parameters.iter().enumerate() {
        if !feeds.contains(&Feed::Parameter(j)) {
            missing.push(format!("parameter `{}`", p.name));
        }
    }
    if !missing.is_empty() {
        unknown.push(format!(
            "manifest {} not an input of the graph",
            missing.join(", ")
        ));
    }
    if !unknown.is_empty() {
        return Err(unknown.join("; "));
    }
    Ok(feeds)
}

/// Same rank, and every dimension known on both sides agrees (-1 or a
/// symbolic dimension on either side matches anything).
fn shapes_compatible(graph: &[i64], manifest: &[i64]) -> bool {
    graph.len() == manifest.len()
        && graph
            .iter()
            .zip(manifest)
            .all(|(&g, &m)| g < 0 || m < 0 || g == m)
}

fn output_position(graph: &Graph, name: &str) -> Result<usize> {
    graph
        .session
        .outputs()
        .iter()
        .position(|o| o.name() == name)
        .ok_or_else(|| EngineError::ManifestMismatch {
            path: graph.path.clone(),
            reason: format!(
                "output `{name}` named in the manifest is not an output of the graph (outputs: {})",
                graph
                    .session
                    .outputs()
                    .iter()
                    .map(|o| o.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

fn check_output_shape(graph: &Graph, pos: usize, want: &[i64], what: &str) -> Result<()> {
    let outlet = &graph.session.outputs()[pos];
    match outlet.dtype() {
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape,
            ..
        } => {
            // Shapes of outputs are often not inferred (empty); check only what is known.
            if !shape.is_empty() && !shapes_compatible(shape, want) {
                return Err(EngineError::ManifestMismatch {
                    path: graph.path.clone(),
                    reason: format!(
                        "{what} (`{}`) has shape {:?}, expected {want:?}",
                        outlet.name(),
                        shape.iter().collect::<Vec<_>>()
                    ),
                });
            }
            Ok(())
        }
        other => Err(EngineError::ManifestMismatch {
            path: graph.path.clone(),
            reason: format!(
                "{what} (`{}`) is {other}, expected a float32 tensor",
                outlet.name()
            ),
        }),
    }
}

fn check_scalar_output(graph: &Graph, pos: usize) -> Result<()> {
    let outlet = &graph.session.outputs()[pos];
    match outlet.dtype() {
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape,
            ..
        } if shape.iter().all(|&d| d <= 1) => Ok(()),
        other => Err(EngineError::ManifestMismatch {
            path: graph.path.clone(),
            reason: format!(
                "loss output `{}` is {other}, expected a float32 scalar",
                outlet.name()
            ),
        }),
    }
}
