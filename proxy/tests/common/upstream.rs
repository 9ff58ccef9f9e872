//! An in-process upstream binary cache with switchable misbehaviour and per-path request counts.

use std::{
    collections::{HashMap, HashSet},
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    extract::State,
    http::{header, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use bytes::Bytes;
use futures::{stream::BoxStream, StreamExt};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use super::data::Entry;

/// How the whole upstream answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// HTTP 500 for every request.
    Fail500,
    /// Waits this long before answering (normally).
    Delay(Duration),
}

/// How one object's body is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Full Content-Length announced, connection cut after half the bytes.
    Truncate,
    /// Same length, one byte flipped.
    Corrupt,
    /// `chunk` bytes, then a pause of `every`, until done.
    Throttle { chunk: usize, every: Duration },
}

struct Shared {
    priority: u32,
    mode: Mutex<Mode>,
    objects: Mutex<HashMap<String, Bytes>>,
    /// `Content-Encoding` sent with an object (as cache.nixos.org sends `br` for listings).
    encodings: Mutex<HashMap<String, &'static str>>,
    faults: Mutex<HashMap<String, Fault>>,
    gets: Mutex<HashMap<String, usize>>,
    /// Paths answered with `302 Found` to a location.
    redirects: Mutex<HashMap<String, String>>,
    /// Paths whose throttled body has been handed out completely.
    finished: Mutex<HashSet<String>>,
    /// Throttled bodies being sent: not yet finished, nor dropped (the client hung up).
    open_bodies: Mutex<usize>,
}

/// Counts a throttled body as open while it lives.
struct OpenBody(Arc<Shared>);

impl OpenBody {
    fn new(shared: Arc<Shared>) -> Self {
        *shared.open_bodies.lock().unwrap() += 1;
        Self(shared)
    }
}

impl Drop for OpenBody {
    fn drop(&mut self) {
        *self.0.open_bodies.lock().unwrap() -= 1;
    }
}

pub struct Upstream {
    pub url: String,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts serving on 127.0.0.1 with `Priority: priority` in its nix-cache-info.
    pub async fn start(priority: u32) -> Self {
        let shared = Arc::new(Shared {
            priority,
            mode: Mutex::new(Mode::Normal),
            objects: Mutex::default(),
            encodings: Mutex::default(),
            faults: Mutex::default(),
            gets: Mutex::default(),
            redirects: Mutex::default(),
            finished: Mutex::default(),
            open_bodies: Mutex::default(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().fallback(handle).with_state(Arc::clone(&shared));
        let (tx, task) = super::serve_in_background(listener, app);
        Self {
            url,
            shared,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Publishes the entry's narinfo and NAR file.
    pub fn add(&self, entry: &Entry) {
        self.add_under("", entry);
    }

    /// Publishes the entry in a cache rooted at `prefix` (e.g. `/team`): its URL is `url + prefix`.
    pub fn add_under(&self, prefix: &str, entry: &Entry) {
        self.put(&format!("{prefix}{}", entry.narinfo_path()), entry.narinfo_text());
        self.put(
            &format!("{prefix}{}", entry.upstream_nar_path()),
            entry.file.clone(),
        );
    }

    /// Serves `body` at `path`, replacing what was there.
    pub fn put(&self, path: &str, body: impl Into<Bytes>) {
        self.shared
            .objects
            .lock()
            .unwrap()
            .insert(path.to_owned(), body.into());
    }

    /// Serves `body` at `path` with `Content-Encoding: encoding`, whatever the request accepts.
    pub fn put_encoded(&self, path: &str, body: impl Into<Bytes>, encoding: &'static str) {
        self.put(path, body);
        let mut encodings = self.shared.encodings.lock().unwrap();
        encodings.insert(path.to_owned(), encoding);
    }

    /// Answers GET `path` with `302 Found` to `location` (any URL), replacing what was there.
    pub fn redirect(&self, path: &str, location: &str) {
        let mut redirects = self.shared.redirects.lock().unwrap();
        redirects.insert(path.to_owned(), location.to_owned());
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    pub fn set_fault(&self, path: &str, fault: Option<Fault>) {
        let mut faults = self.shared.faults.lock().unwrap();
        match fault {
            Some(f) => faults.insert(path.to_owned(), f),
            None => faults.remove(path),
        };
    }

    /// GET requests seen for `path`.
    pub fn gets(&self, path: &str) -> usize {
        self.shared.gets.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// GET requests seen for anything but `/nix-cache-info`.
    pub fn object_gets(&self) -> usize {
        let gets = self.shared.gets.lock().unwrap();
        gets.iter()
            .filter(|(p, _)| *p != "/nix-cache-info")
            .map(|(_, n)| n)
            .sum()
    }

    /// True once the last chunk of a throttled body at `path` has been handed to the server.
    pub fn finished_sending(&self, path: &str) -> bool {
        self.shared.finished.lock().unwrap().contains(path)
    }

    /// Throttled bodies still being sent: a body whose client closed the connection is dropped
    /// (at the next chunk it tries to send).
    pub fn open_bodies(&self) -> usize {
        *self.shared.open_bodies.lock().unwrap()
    }

    /// Stops accepting and closes connections (bounded wait for in-flight responses). Counts stay
    /// readable; requests to `url` fail from now on.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, method: Method, uri: Uri) -> Response {
    let path = uri.path().to_owned();
    if method == Method::GET {
        *shared.gets.lock().unwrap().entry(path.clone()).or_default() += 1;
    }
    let mode = *shared.mode.lock().unwrap();
    match mode {
        Mode::Fail500 => return (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded\n").into_response(),
        Mode::Delay(pause) => tokio::time::sleep(pause).await,
        Mode::Normal => {}
    }
    let location = shared.redirects.lock().unwrap().get(&path).cloned();
    if let Some(location) = location {
        return (StatusCode::FOUND, [(header::LOCATION, location)], "moved\n").into_response();
    }
    if path.ends_with("/nix-cache-info") {
        let text = format!(
            "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: {}\n",
            shared.priority
        );
        return ([(header::CONTENT_TYPE, "text/x-nix-cache-info")], text).into_response();
    }
    let body = shared.objects.lock().unwrap().get(&path).cloned();
    let Some(body) = body else {
        return (StatusCode::NOT_FOUND, "404 not found\n").into_response();
    };
    let fault = shared.faults.lock().unwrap().get(&path).copied();
    let len = body.len();
    let encoding = shared.encodings.lock().unwrap().get(&path).copied();
    let stream: BoxStream<'static, io::Result<Bytes>> = match fault {
        None => {
            let mut response = body.into_response();
            if let Some(encoding) = encoding {
                let value = header::HeaderValue::from_static(encoding);
                response.headers_mut().insert(header::CONTENT_ENCODING, value);
            }
            return response;
        }
        Some(Fault::Corrupt) => {
            let mut bytes = body.to_vec();
            bytes[len / 2] ^= 0x5a;
            return Bytes::from(bytes).into_response();
        }
        Some(Fault::Truncate) => futures::stream::iter([
            Ok(body.slice(..len / 2)),
            Err(io::Error::other("upstream connection cut")),
        ])
        .boxed(),
        Some(Fault::Throttle { chunk, every }) => throttled(shared, path, body, chunk, every),
    };
    Response::builder()
        .header(header::CONTENT_LENGTH, len)
        .body(Body::from_stream(stream))
        .unwrap()
}

fn throttled(
    shared: Arc<Shared>,
    path: String,
    body: Bytes,
    chunk: usize,
    every: Duration,
) -> BoxStream<'static, io::Result<Bytes>> {
    let open = OpenBody::new(Arc::clone(&shared));
    futures::stream::unfold(0usize, move |pos| {
        let (shared, path, body) = (Arc::clone(&shared), path.clone(), body.clone());
        async move {
            if pos >= body.len() {
                return None;
            }
            if pos > 0 {
                tokio::time::sleep(every).await;
            }
            let end = (pos + chunk).min(body.len());
            if end == body.len() {
                shared.finished.lock().unwrap().insert(path);
            }
            Some((Ok(body.slice(pos..end)), end))
        }
    })
    // Lives as long as the stream: dropped when it ends or when the server drops it.
    .inspect(move |_| {
        let _ = &open;
    })
    .boxed()
}
