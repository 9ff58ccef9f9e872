//! Container and pod pieces shared by the Deployment, the migration Job and the GC, fsck and
//! warm-up CronJobs.

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, KeyToPath, ObjectFieldSelector,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use nixcache_crds::{NixCache, SecretKeyRef};

use super::{data_claim_name, Plan};

/// Port the proxy listens on inside the pod.
pub const CONTAINER_PORT: i32 = 8501;
/// The proxy's `--data-dir` (temp downloads; with a volume also NARs and SQLite).
pub const DATA_DIR: &str = "/var/lib/nixcache";
/// Unprivileged user and group of every container (the distroless "nonroot" ids).
const RUN_AS: i64 = 65532;

pub(super) const SIGNING_DIR: &str = "/etc/nixcache/signing";
const NETRC_DIR: &str = "/etc/nixcache/netrc";

/// Where the netrc Secret of upstream `i` is mounted.
pub(super) fn netrc_dir(i: usize) -> String {
    format!("{NETRC_DIR}/{i}")
}
pub(super) const UPLOADS_DIR: &str = "/etc/nixcache/uploads";
/// Where a private cache's read credentials are mounted.
pub(super) const READERS_DIR: &str = "/etc/nixcache/readers";

/// `--storage …` and the S3 flags, the same for `serve`, `gc` and `fsck`.
pub(super) fn storage_args(nc: &NixCache) -> Vec<String> {
    let Some(s3) = &nc.spec.storage.s3 else {
        return vec!["--storage".into(), "local".into()];
    };
    let mut args = vec![
        "--storage".into(),
        "s3".into(),
        "--s3-bucket".into(),
        s3.bucket.clone(),
    ];
    for (flag, value) in [
        ("--s3-endpoint", &s3.endpoint),
        ("--s3-region", &s3.region),
        ("--s3-prefix", &s3.prefix),
    ] {
        if let Some(value) = value {
            args.extend([flag.to_owned(), value.clone()]);
        }
    }
    if s3.path_style {
        args.push("--s3-path-style".into());
    }
    args
}

/// Environment of every container: logs as JSON, and the secrets each command needs, always by
/// reference to their Secret (never inlined): the database URL and the S3 credentials.
pub(super) fn env(nc: &NixCache, with_storage: bool) -> Vec<EnvVar> {
    let mut env = base_env();
    if let Some(url) = &nc.spec.database.url_secret_ref {
        env.push(from_secret("NIXCACHE_DATABASE_URL", url, "url"));
    }
    let credentials = nc
        .spec
        .storage
        .s3
        .as_ref()
        .and_then(|s| s.credentials_secret_ref.as_ref());
    if let (true, Some(c)) = (with_storage, credentials) {
        let id = SecretKeyRef {
            name: c.name.clone(),
            key: c.access_key_id_key.clone(),
        };
        let secret = SecretKeyRef {
            name: c.name.clone(),
            key: c.secret_access_key_key.clone(),
        };
        env.push(from_secret("AWS_ACCESS_KEY_ID", &id, "AWS_ACCESS_KEY_ID"));
        env.push(from_secret(
            "AWS_SECRET_ACCESS_KEY",
            &secret,
            "AWS_SECRET_ACCESS_KEY",
        ));
    }
    env
}

/// Environment without any secret: logs as JSON, and few malloc arenas.
pub(super) fn base_env() -> Vec<EnvVar> {
    vec![
        plain("NIXCACHE_LOG_FORMAT", "json"),
        plain("MALLOC_ARENA_MAX", "2"),
    ]
}

/// `POD_IP` from the downward API, for `--advertise-url http://$(POD_IP):8501`.
pub(super) fn pod_ip_env() -> EnvVar {
    EnvVar {
        name: "POD_IP".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "status.podIP".into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

pub(super) fn plain(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn from_secret(name: &str, r: &SecretKeyRef, default_key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: r.name.clone(),
                key: r.key_or(default_key).to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The data volume (the claim, or an emptyDir for downloads in progress) and `/tmp`.
pub(super) fn data_volumes(nc: &NixCache) -> Vec<Volume> {
    let data = match &nc.spec.storage.persistent_volume_claim {
        Some(v) => Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: v.claim_name.clone().unwrap_or_else(|| data_claim_name(nc)),
                read_only: None,
            }),
            ..Volume::default()
        },
        None => empty_dir("data"),
    };
    vec![data, empty_dir("tmp")]
}

pub(super) fn data_mounts() -> Vec<VolumeMount> {
    vec![mount("data", DATA_DIR, false), mount("tmp", "/tmp", false)]
}

/// Volumes of `serve`: data and tmp, the signing key, and the optional netrc, upload and read
/// credentials, each a single Secret key mounted read-only.
pub(super) fn serve_volumes(nc: &NixCache, plan: &Plan) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = data_volumes(nc);
    let mut mounts = data_mounts();
    let mut secret = |name: &str, r: &SecretKeyRef, default_key: &str, file: &str, dir: &str| {
        let (volume, mount) = secret_file(name, r, default_key, file, dir);
        volumes.push(volume);
        mounts.push(mount);
    };
    secret(
        "signing-key",
        &plan.signing_secret,
        "secret-key",
        "secret-key",
        SIGNING_DIR,
    );
    for (i, upstream) in nc.spec.upstreams.iter().enumerate() {
        if let Some(netrc) = &upstream.netrc_secret_ref {
            secret(&format!("netrc-{i}"), netrc, "netrc", "netrc", &netrc_dir(i));
        }
    }
    if let Some(uploads) = &nc.spec.uploads {
        let r = &uploads.credentials_secret_ref;
        secret("upload-credentials", r, "credentials", "credentials", UPLOADS_DIR);
    }
    if let Some(private) = &nc.spec.private {
        let r = &private.credentials_secret_ref;
        secret("read-credentials", r, "credentials", "credentials", READERS_DIR);
    }
    (volumes, mounts)
}

/// One key of a Secret as the file `dir/file`, read-only.
pub(super) fn secret_file(
    name: &str,
    r: &SecretKeyRef,
    default_key: &str,
    file: &str,
    dir: &str,
) -> (Volume, VolumeMount) {
    (secret_volume(name, r, default_key, file), mount(name, dir, true))
}

fn secret_volume(name: &str, r: &SecretKeyRef, default_key: &str, file: &str) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(r.name.clone()),
            items: Some(vec![KeyToPath {
                key: r.key_or(default_key).to_owned(),
                path: file.into(),
                mode: None,
            }]),
            // Readable by the pod's group (fsGroup) only.
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Volume::default()
    }
}

/// An emptyDir volume `name` without a size limit.
pub(super) fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

pub(super) fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// A container of the proxy image with the hardened security context.
pub(super) fn container(nc: &NixCache, plan: &Plan, name: &str, args: Vec<String>) -> Container {
    Container {
        name: name.into(),
        image: Some(plan.image.clone()),
        image_pull_policy: nc.spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        args: Some(args),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// A pod spec around `containers`: non-root, RuntimeDefault seccomp, the NixCache's placement,
/// pull secrets and service account.
pub(super) fn pod_spec(nc: &NixCache, containers: Vec<Container>, volumes: Vec<Volume>) -> PodSpec {
    let spec = &nc.spec;
    PodSpec {
        containers,
        volumes: Some(volumes),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            fs_group_change_policy: Some("OnRootMismatch".into()),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
        tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
        image_pull_secrets: (!spec.image_pull_secrets.is_empty()).then(|| spec.image_pull_secrets.clone()),
        service_account_name: spec.service_account_name.clone(),
        ..PodSpec::default()
    }
}
