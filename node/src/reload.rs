//! Hot reload: SIGHUP, `POST /reload` or `medianode run --watch` re-read
//! the pipeline file, and the stages whose plugin or settings changed are
//! replaced while everything else goes on.
//!
//! 1. The file is loaded and its plugins compiled off the async threads,
//!    with every check `medianode check` makes; a file that fails is
//!    refused with its located errors, and nothing changes.
//! 2. What may change: each `[[stage]]`'s `plugin` (or the plugin file's
//!    bytes), `sha256`, `config`, `limits`, `restart`, `failure` and
//!    `recorder`. Anything else (sources, sinks, links, the set of stages,
//!    `[server]`, `[client]`, `[admin]`, `[pipeline]`) needs a restart, and
//!    such a file is refused saying so.
//! 3. Blue/green, all or nothing: each changed stage's supervisor builds an
//!    instance of the new stage (its `init` run, off the data path) beside
//!    the one serving; once every one is ready, all are swapped in, each
//!    between two calls; if any fails, none is. Unchanged stages are not
//!    touched. A stage keeps its id, so its state store, metrics and
//!    connections (rooms, WebSockets, peer connections) carry over.

use crate::admin::NodeView;
use crate::config::{PipelineConfig, Runs};
use crate::runtime::{Reload, Runtime};
use std::path::PathBuf;
use std::time::Duration;

/// The settings of a `[[stage]]` a reload may change.
const RELOADABLE: [&str; 7] = ["plugin", "sha256", "config", "limits", "restart", "failure", "recorder"];

/// What a reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    pub replaced: Vec<String>,
    pub unchanged: Vec<String>,
}

/// Reloads the node's pipeline file on request.
pub struct Reloader {
    path: PathBuf,
    runtime: Runtime,
    /// The text of the file the node runs now.
    text: String,
    watched: Vec<PathBuf>,
    view: NodeView,
}

impl Reloader {
    /// A reloader for the node running `current`, loaded from `path`.
    pub fn new(path: PathBuf, runtime: Runtime, current: &PipelineConfig, view: NodeView) -> Reloader {
        Reloader { watched: watched(&path, current), text: current.file.text.clone(), path, runtime, view }
    }

    /// The files a `--watch` looks at: the pipeline file and every plugin
    /// file it names.
    pub fn watched(&self) -> &[PathBuf] {
        &self.watched
    }

    /// Re-reads the file and replaces the stages that changed; on any
    /// error, nothing changes and the error says why.
    pub async fn reload(&mut self) -> Result<Reloaded, String> {
        let (path, runtime) = (self.path.clone(), self.runtime.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            let config = crate::config::load(&path).map_err(|e| e.to_string())?;
            let compiled = crate::pipeline::compile(&runtime, &config).map_err(|e| e.to_string())?;
            Ok::<_, String>((config, compiled))
        })
        .await
        .map_err(|e| format!("the reload stopped: {e}"))?;
        let (config, compiled) = loaded?;
        let old = stage_tables(&self.text)?;
        let new = stage_tables(&config.file.text)?;
        if shape(&self.text)? != shape(&config.file.text)? {
            return Err("the file changes more than stages' plugins and settings (sources, sinks, links, the set of stages, \
                        [pipeline], [server], [client] or [admin]): restart the node to apply it"
                .into());
        }
        let mut replaced = Vec::new();
        let mut unchanged = Vec::new();
        let mut waits = Vec::new();
        // Dropped unsent (an early return below) they call the reload off:
        // a stage already asked throws its new instance away.
        let mut commits = Vec::new();
        let mut longest_init = Duration::ZERO;
        for stage in &config.stages {
            let settings_changed = old.get(&stage.id) != new.get(&stage.id);
            let Runs::Plugin(_) = &stage.runs else {
                if settings_changed {
                    return Err(format!("stage '{}' is built in: restart the node to change it", stage.id));
                }
                unchanged.push(stage.id.clone());
                continue;
            };
            let (Some(plugin), Some(shared)) = (compiled.plugins.get(&stage.id), self.view.stage(&stage.id)) else {
                return Err(format!("stage '{}' is not running here: restart the node to add it", stage.id));
            };
            let digest_changed = crate::runtime::lock(&shared.status).digest != plugin.digest;
            if !settings_changed && !digest_changed {
                unchanged.push(stage.id.clone());
                continue;
            }
            let spec = crate::pipeline::spec(stage, plugin.clone());
            longest_init = longest_init.max(stage.limits.init_deadline);
            let (prepared, prepared_rx) = tokio::sync::oneshot::channel();
            let (commit_tx, commit) = std::sync::mpsc::channel();
            let (swapped, swapped_rx) = tokio::sync::oneshot::channel();
            *crate::runtime::lock(&shared.reload) = Some(Reload { spec, prepared, commit, swapped });
            waits.push((stage.id.clone(), prepared_rx, swapped_rx));
            commits.push(commit_tx);
            replaced.push(stage.id.clone());
        }
        // A build takes at most its init deadline; the margin covers a busy
        // machine and the supervisor's next idle round.
        let within = longest_init * 2 + Duration::from_secs(5);
        let mut failures = Vec::new();
        let mut swaps = Vec::new();
        for (id, prepared, swapped) in waits {
            match tokio::time::timeout(within, prepared).await {
                Ok(Ok(Ok(()))) => swaps.push((id, swapped)),
                Ok(Ok(Err(e))) => failures.push(e),
                Ok(Err(_)) => failures.push(format!("stage '{id}' ended during the reload")),
                Err(_) => failures.push(format!("stage '{id}': no new instance within {within:?}")),
            }
        }
        let commit = failures.is_empty();
        commits.iter().for_each(|c| {
            let _ = c.send(commit);
        });
        if !commit {
            return Err(format!("nothing was changed: {}", failures.join("; ")));
        }
        for (id, swapped) in swaps {
            if tokio::time::timeout(within, swapped).await.is_err() {
                tracing::warn!(stage = %id, "the reloaded stage has not swapped in yet (it serves no calls?)");
            }
        }
        self.watched = watched(&self.path, &config);
        self.text = config.file.text.clone();
        tracing::info!(?replaced, "pipeline reloaded");
        Ok(Reloaded { replaced, unchanged })
    }
}

fn watched(path: &std::path::Path, config: &PipelineConfig) -> Vec<PathBuf> {
    let dir = config.file.dir().to_path_buf();
    let plugins = config.stages.iter().filter_map(|s| match &s.runs {
        Runs::Plugin(p) if p.stock_name().is_none() => Some(dir.join(&p.name)),
        _ => None,
    });
    std::iter::once(path.to_path_buf()).chain(plugins).collect()
}

/// Each `[[stage]]`'s reloadable settings, by id, as TOML values (no
/// positions: moving a line is not a change).
fn stage_tables(text: &str) -> Result<std::collections::BTreeMap<String, toml::Table>, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let stages = table.get("stage").and_then(toml::Value::as_array).cloned().unwrap_or_default();
    Ok(stages
        .iter()
        .filter_map(toml::Value::as_table)
        .filter_map(|t| {
            let id = t.get("id")?.as_str()?.to_string();
            let settings = t.iter().filter(|(k, _)| RELOADABLE.contains(&k.as_ref())).map(|(k, v)| (k.clone(), v.clone())).collect();
            Some((id, settings))
        })
        .collect())
}

/// The file without the reloadable settings: what must stay the same.
fn shape(text: &str) -> Result<toml::Table, String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    if let Some(toml::Value::Array(stages)) = table.get_mut("stage") {
        for stage in stages.iter_mut().filter_map(toml::Value::as_table_mut) {
            stage.retain(|k, _| !RELOADABLE.contains(&k));
        }
    }
    Ok(table)
}

/// How often `--watch` looks at the files.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Serves reloads, one at a time, from `POST /reload` (through `view`),
/// SIGHUP and, with `watch`, changes to the watched files; systemd hears
/// `RELOADING=1` and `READY=1` around each. Returns the tasks doing it.
pub fn serve(
    mut reloader: Reloader,
    view: &NodeView,
    systemd: crate::admin::systemd::Systemd,
    watch: bool,
) -> Vec<tokio::task::JoinHandle<()>> {
    let (asks, mut asked) = tokio::sync::mpsc::channel::<crate::admin::ReloadAsked>(4);
    view.set_reloads(asks.clone());
    let mut tasks = Vec::new();
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangup) => {
            let asks = asks.clone();
            tasks.push(tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the pipeline file");
                    let (answer, _) = tokio::sync::oneshot::channel();
                    let _ = asks.send(answer).await;
                }
            }));
        }
        Err(e) => tracing::warn!("SIGHUP will not reload: {e}"),
    }
    if watch {
        let files = reloader.watched().to_vec();
        // What the files are now, read before saying so: a change made
        // right after the message is a change.
        let seen = stamp(&files);
        tracing::info!(?files, "watching for changes");
        tasks.push(tokio::spawn(watch_files(files, seen, asks)));
    }
    tasks.push(tokio::spawn(async move {
        while let Some(answer) = asked.recv().await {
            systemd.reloading();
            let result = reloader.reload().await;
            systemd.ready();
            if let Err(why) = &result {
                tracing::warn!("reload refused; the pipeline runs as it was: {why}");
            }
            let _ = answer.send(result.map(|done| serde_json::json!(done)));
        }
    }));
    tasks
}

/// Each file's modification time and length (`None`: unreadable).
type Stamp = Vec<Option<(std::time::SystemTime, u64)>>;

fn stamp(files: &[PathBuf]) -> Stamp {
    files.iter().map(|f| std::fs::metadata(f).ok().and_then(|m| Some((m.modified().ok()?, m.len())))).collect()
}

/// Asks for a reload when a watched file has changed since `seen` and then
/// stayed the same for one look (an editor's save may take several writes).
async fn watch_files(files: Vec<PathBuf>, mut seen: Stamp, asks: tokio::sync::mpsc::Sender<crate::admin::ReloadAsked>) {
    let mut changed = false;
    let mut ticks = tokio::time::interval(WATCH_EVERY);
    loop {
        ticks.tick().await;
        let looked = files.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || stamp(&looked)).await else { return };
        if now != seen {
            seen = now;
            changed = true;
        } else if std::mem::take(&mut changed) {
            tracing::info!("a watched file changed: reloading");
            let (answer, _) = tokio::sync::oneshot::channel();
            if asks.send(answer).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "[server]\n\n[[stage]]\nid = \"rooms\"\nplugin = \"stock:signaling\"\nconfig = { max-room-size = 50 }\n";

    #[test]
    fn settings_are_reloadable_and_the_rest_is_shape() {
        let after = BEFORE.replace("50", "2");
        assert_eq!(shape(BEFORE), shape(&after));
        assert_ne!(stage_tables(BEFORE).ok(), stage_tables(&after).ok());
        let moved = format!("\n\n{BEFORE}");
        assert_eq!(stage_tables(BEFORE).ok(), stage_tables(&moved).ok(), "positions are not changes");
        let listen = BEFORE.replace("[server]", "[server]\nlisten = \"127.0.0.1:9\"");
        assert_ne!(shape(BEFORE), shape(&listen));
    }
}
