//! Creating a CA data dir (`init`, a first `serve`): checked, built in a staging directory
//! and renamed into place, so a failure leaves nothing behind.

use super::*;

impl Authority {
    /// Refuses a dir that cannot become a new CA: one that holds a CA, or anything else.
    pub fn check_new_dir(dir: &Path) -> Result<(), AuthorityError> {
        if let Some(found) = DataDir::new(dir).existing_ca_marker() {
            return Err(AuthorityError::AlreadyInitialised {
                dir: dir.to_path_buf(),
                found,
            });
        }
        if dir.exists() {
            let mut entries = std::fs::read_dir(dir).map_err(|e| FsError::new("read", dir, e))?;
            if entries.next().is_some() {
                return Err(AuthorityError::DirNotEmpty {
                    dir: dir.to_path_buf(),
                });
            }
        }
        Ok(())
    }

    /// Creates a new CA data dir. Everything is built in a staging directory next to `dir` and
    /// renamed into place at the end, so a failure leaves nothing behind.
    pub async fn init(
        dir: &Path,
        options: InitOptions,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<InitReport, AuthorityError> {
        Self::check_new_dir(dir)?;
        let (policy_path, policy_text) = options.policy.clone().unwrap_or_else(|| {
            (
                PathBuf::from("(built-in policies/etcd.toml)"),
                crate::policy::DEFAULT_POLICY.to_string(),
            )
        });
        let policy = Policy::parse(&policy_text, &policy_path)?;
        let shared = match &options.database {
            Some(config) => Some(Self::new_shared_store(config, &options.key_protection).await?),
            None => None,
        };
        let result = Self::init_with(
            dir,
            options,
            &policy,
            policy_text,
            shared.as_ref(),
            actor,
            now,
        )
        .await;
        if let Some(store) = shared {
            store.close().await;
        }
        result
    }

    /// Opens (and migrates) a shared database for a new CA: refused when it holds one, or when
    /// the key would go there unsealed.
    async fn new_shared_store(
        config: &StoreConfig,
        protection: &KeyProtection,
    ) -> Result<Store, AuthorityError> {
        if matches!(protection, KeyProtection::Unencrypted) {
            return Err(AuthorityError::UnsealedKeyInDatabase);
        }
        let store = Store::open_config(config, false, Migrations::Apply).await?;
        let existing = match store.generations().await {
            Ok(g) => g,
            Err(e) => {
                store.close().await;
                return Err(e.into());
            }
        };
        if let Some(g) = existing.last() {
            store.close().await;
            return Err(AuthorityError::DatabaseInitialised {
                database: config.describe(),
                generation: g.id,
            });
        }
        Ok(store)
    }

    #[allow(clippy::too_many_arguments)]
    async fn init_with(
        dir: &Path,
        options: InitOptions,
        policy: &Policy,
        policy_text: String,
        shared: Option<&Store>,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<InitReport, AuthorityError> {
        let dir_exists = dir.exists();

        let (material, notes, imported) = match &options.import {
            Some((cert_pem, key_pem)) => {
                let (material, notes) = ca::import(cert_pem, key_pem, now)?;
                (material, notes, true)
            }
            None => {
                let common_name = format!("{} generation 1", options.common_name);
                let material = ca::create(
                    &common_name,
                    options.key_type,
                    options.validity,
                    policy.backdate,
                    now,
                )?;
                (material, Vec::new(), false)
            }
        };

        let parent = fsutil::parent_of(dir);
        std::fs::create_dir_all(parent).map_err(|e| FsError::new("create directory", parent, e))?;
        let staging_name = format!(
            ".{}.init-{}",
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "etcd-ca".into()),
            hex::encode(&ca::random_serial()?[..6])
        );
        let staging = parent.join(staging_name);
        let key_text = options.key_protection.key_file_text(&material.key)?;
        let result = Self::populate(
            &DataDir::new(&staging),
            &material,
            &key_text,
            imported,
            &policy_text,
            shared,
            actor,
            now,
        )
        .await;
        let result = result.and_then(|()| {
            if dir_exists {
                std::fs::remove_dir(dir).map_err(|e| FsError::new("replace", dir, e))?;
            }
            std::fs::rename(&staging, dir).map_err(|e| FsError::new("move into place", dir, e))?;
            fsutil::sync_dir(parent)?;
            Ok(())
        });
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        let cert = pki::parse_certificate(&material.cert_der)?;
        Ok(InitReport {
            data_dir: dir.to_path_buf(),
            fingerprint: pki::fingerprint(&material.cert_der),
            subject: cert.subject().to_string(),
            key_type: material.key_type.to_string(),
            imported,
            not_after: material.not_after,
            notes,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn populate(
        layout: &DataDir,
        material: &ca::CaMaterial,
        key_text: &str,
        imported: bool,
        policy_text: &str,
        shared: Option<&Store>,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(), AuthorityError> {
        fsutil::create_private_dir(layout.root())?;
        fsutil::create_private_dir(&layout.ca_dir())?;
        let key_file = DataDir::generation_key_file(1);
        let cert_file = DataDir::generation_cert_file(1);
        // A shared database holds the sealed key (every server signs with it); else its file.
        if shared.is_none() {
            fsutil::write_new(
                &layout.resolve(&key_file),
                key_text.as_bytes(),
                fsutil::PRIVATE,
            )?;
        }
        let cert_pem = pki::certificate_pem(&material.cert_der);
        fsutil::write_new(
            &layout.resolve(&cert_file),
            cert_pem.as_bytes(),
            fsutil::PUBLIC,
        )?;
        fsutil::write_new(&layout.policy(), policy_text.as_bytes(), fsutil::PUBLIC)?;
        let store = match shared {
            Some(store) => store.clone(),
            None => Store::create(&layout.database()).await?,
        };
        let fingerprint = pki::fingerprint(&material.cert_der);
        let result = async {
            store
                .insert_generation(&GenerationRecord {
                    id: 1,
                    state: GenerationState::Active,
                    key_type: material.key_type.to_string(),
                    cert_pem,
                    fingerprint: fingerprint.clone(),
                    key_file,
                    imported,
                    not_before: material.not_before,
                    not_after: material.not_after,
                    activated_at: Some(now),
                    retired_at: None,
                    created_at: now,
                    endorsement_pem: None,
                    key_pem: shared.map(|_| key_text.to_string()),
                })
                .await?;
            if shared.is_some() {
                store.setting_or_init(POLICY_SETTING, policy_text).await?;
            }
            store
                .record_audit(
                    &if imported {
                        AuditAction::CaImport
                    } else {
                        AuditAction::CaInit
                    }
                    .event(
                        actor,
                        now,
                        None,
                        None,
                        format!("generation 1, {fingerprint}"),
                    ),
                )
                .await
        }
        .await;
        if shared.is_none() {
            store.close().await;
        }
        result?;
        fsutil::sync_dir(layout.root())?;
        Ok(())
    }
}
