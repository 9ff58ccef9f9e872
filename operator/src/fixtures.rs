//! NixCache builders for tests and examples of the three common setups.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use nixcache_crds::{
    Database, Fsck, GarbageCollection, NixCache, NixCacheSpec, Pin, S3CredentialsRef, S3Storage,
    SecretKeyRef, Signing, SqliteDatabase, Storage, VolumeStorage, Warm,
};

/// A well-formed store path, for warm-up and pin specs.
pub const HELLO: &str = "/nix/store/7qxb8wbwqha95lbfrcj97j6fb8wbywa4-hello-2.12.1";

/// A NixCache `name` in namespace `default`, generation 1, with a uid (so children get an
/// owner reference).
fn base(name: &str, spec: NixCacheSpec) -> NixCache {
    let mut nc = NixCache::new(name, spec);
    nc.metadata.namespace = Some("default".into());
    nc.metadata.uid = Some(format!("uid-{name}"));
    nc.metadata.generation = Some(1);
    nc
}

/// An empty spec on `storage` and `database`.
pub fn spec(storage: Storage, database: Database) -> NixCacheSpec {
    NixCacheSpec {
        replicas: 1,
        image: None,
        image_pull_policy: None,
        image_pull_secrets: Vec::new(),
        upstreams: Vec::new(),
        priority: None,
        storage,
        database,
        signing: None,
        gc: None,
        pins: Vec::new(),
        fsck: None,
        warm: None,
        uploads: None,
        private: None,
        service: None,
        resources: None,
        node_selector: Default::default(),
        tolerations: Vec::new(),
        affinity: None,
        pod_annotations: Default::default(),
        service_account_name: None,
        autoscaling: None,
        pod_disruption_budget: None,
        extra_args: Vec::new(),
    }
}

/// One replica, SQLite and NARs on a 50Gi claim the operator creates.
pub fn single(name: &str) -> NixCache {
    let storage = Storage {
        persistent_volume_claim: Some(VolumeStorage {
            size: Some(Quantity("50Gi".into())),
            ..VolumeStorage::default()
        }),
        ..Storage::default()
    };
    let database = Database {
        sqlite: Some(SqliteDatabase {}),
        ..Database::default()
    };
    base(name, spec(storage, database))
}

/// Three replicas on PostgreSQL (Secret `pg`, key `url`) and S3 (Secret `s3`), with GC.
pub fn scaled(name: &str) -> NixCache {
    let storage = Storage {
        s3: Some(S3Storage {
            bucket: "nix-cache".into(),
            region: Some("eu-central-1".into()),
            credentials_secret_ref: Some(S3CredentialsRef {
                name: "s3".into(),
                ..S3CredentialsRef::default()
            }),
            ..S3Storage::default()
        }),
        ..Storage::default()
    };
    let database = Database {
        url_secret_ref: Some(SecretKeyRef {
            name: "pg".into(),
            key: None,
        }),
        ..Database::default()
    };
    let mut spec = spec(storage, database);
    spec.replicas = 3;
    spec.gc = Some(GarbageCollection {
        max_size: "500G".into(),
        schedule: Some("0 4 * * *".into()),
        time_zone: None,
        keep_uploads: false,
    });
    base(name, spec)
}

/// Builder-style changes of a NixCache.
pub trait NixCacheExt: Sized {
    /// Sets `spec.image`.
    fn with_image(self, image: &str) -> Self;
    /// Uses the existing signing Secret `name` (key `secret-key`).
    fn with_signing_secret(self, name: &str) -> Self;
    /// Sets `metadata.generation`.
    fn with_generation(self, generation: i64) -> Self;
    /// Sets `spec.warm`: `paths` on `schedule`, the other settings at their defaults.
    fn with_warm(self, schedule: &str, paths: &[&str]) -> Self;
    /// Sets `spec.fsck`: on `schedule`, repairing, without verifying the contents.
    fn with_fsck(self, schedule: &str) -> Self;
    /// Sets `spec.pins`: each path with its closure (`closure: true`), or alone.
    fn with_pins(self, pins: &[(&str, bool)]) -> Self;
}

impl NixCacheExt for NixCache {
    fn with_image(mut self, image: &str) -> Self {
        self.spec.image = Some(image.into());
        self
    }

    fn with_signing_secret(mut self, name: &str) -> Self {
        self.spec.signing = Some(Signing {
            key_name: None,
            secret_ref: Some(SecretKeyRef {
                name: name.into(),
                key: None,
            }),
            ..Signing::default()
        });
        self
    }

    fn with_generation(mut self, generation: i64) -> Self {
        self.metadata.generation = Some(generation);
        self
    }

    fn with_warm(mut self, schedule: &str, paths: &[&str]) -> Self {
        self.spec.warm = Some(Warm {
            schedule: schedule.into(),
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            ..Warm::default()
        });
        self
    }

    fn with_fsck(mut self, schedule: &str) -> Self {
        self.spec.fsck = Some(Fsck {
            schedule: schedule.into(),
            ..Fsck::default()
        });
        self
    }

    fn with_pins(mut self, pins: &[(&str, bool)]) -> Self {
        self.spec.pins = pins
            .iter()
            .map(|(path, closure)| Pin {
                store_path: (*path).to_owned(),
                closure: *closure,
            })
            .collect();
        self
    }
}
