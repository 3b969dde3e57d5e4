//! A CA on a database several servers share (PostgreSQL): the policy they all sign under (the
//! database records it; a server whose file differs is refused), schema migrations on request,
//! publishing a new policy, and the move of a SQLite CA onto such a database without
//! re-issuing anything.

use super::*;
use crate::store::{copy_all, CopyExtras};

/// Set in a SQLite store whose CA was moved to a shared database: where, and when.
pub(super) const MOVED_SETTING: &str = "moved_to";

/// The name of the shared setting that holds the policy text servers sign under.
pub(super) const POLICY_SETTING: &str = "policy_toml";

/// The policy of a CA on a shared database: the one it records. A data dir without a policy
/// file gets a copy; one whose file differs is refused (two servers must never sign under two
/// policies). A database moved before it recorded one takes this server's. Returns the policy
/// and its text's SHA-256.
pub(super) async fn shared_policy(
    layout: &DataDir,
    store: &Store,
) -> Result<(Policy, String), AuthorityError> {
    let path = layout.policy();
    let file = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(FsError::new("read", &path, e).into()),
    };
    let recorded = match (store.setting(POLICY_SETTING).await?, &file) {
        (Some(text), _) => text,
        (None, Some(text)) => store.setting_or_init(POLICY_SETTING, text).await?,
        (None, None) => {
            return Err(AuthorityError::DatabaseNotInitialised {
                database: store.describe(),
            })
        }
    };
    match file {
        None => {
            fsutil::create_private_dir(layout.root())?;
            fsutil::write_new(&path, recorded.as_bytes(), fsutil::PUBLIC)?;
        }
        Some(text) if text != recorded => {
            return Err(AuthorityError::PolicyMismatch {
                path,
                file_sha256: pki::sha256_hex(text.as_bytes()),
                database_sha256: pki::sha256_hex(recorded.as_bytes()),
            });
        }
        Some(_) => {}
    }
    Ok((
        Policy::parse(&recorded, &path)?,
        pki::sha256_hex(recorded.as_bytes()),
    ))
}

/// What a move copied.
#[derive(Clone, Debug, Serialize)]
pub struct MoveReport {
    pub database: String,
    /// Rows per table.
    pub copied: Vec<(String, u64)>,
    pub generations: usize,
}

impl Authority {
    /// On a shared database: notices a policy published since this server started (called
    /// with the follower's poll); from then on this server signs no certificate (503
    /// `policy_changed`) until it is restarted with the new policy. CRLs keep being served.
    pub async fn follow_policy(&self) -> Result<(), AuthorityError> {
        let Some(mine) = &self.shared_policy else {
            return Ok(());
        };
        if self
            .policy_changed
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Ok(());
        }
        if let Some(text) = self.store.setting(POLICY_SETTING).await? {
            let recorded = pki::sha256_hex(text.as_bytes());
            if recorded != *mine {
                tracing::error!(signing = %mine, published = %recorded, "a new policy was published on the database: this server signs nothing until it is restarted with it");
                self.policy_changed
                    .store(true, std::sync::atomic::Ordering::Release);
            }
        }
        Ok(())
    }

    /// Whether this server can do its work now: on a shared database, that the database
    /// answers and the policy is still the one it signs under. (A local SQLite file always
    /// answers.)
    pub async fn ready(&self) -> Result<(), AuthorityError> {
        if self.shared_policy.is_none() {
            return Ok(());
        }
        self.check_policy_current()?;
        self.store.revocation_epoch().await?;
        Ok(())
    }

    /// Refuses to sign under a policy the database no longer records.
    pub(super) fn check_policy_current(&self) -> Result<(), AuthorityError> {
        if self
            .policy_changed
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(AuthorityError::PolicyChanged);
        }
        Ok(())
    }

    /// Applies the schema migrations this version needs to a shared database.
    pub async fn migrate(config: &StoreConfig) -> Result<(), AuthorityError> {
        let store = Store::open_config(config, false, Migrations::Apply).await?;
        store.close().await;
        Ok(())
    }

    /// Copies the SQLite CA in `dir` (records, the generations' sealed keys from their files,
    /// the policy) into an empty shared database, in one transaction. The caller keeps any
    /// server off `dir` meanwhile. Nothing is re-issued: serials, CRL numbers and the audit
    /// trail carry over.
    /// A key kept unencrypted in its file is sealed on the way with `seal_with` (refused
    /// without it: the database never holds a key in the clear).
    pub async fn move_to_shared(
        dir: &Path,
        config: &StoreConfig,
        seal_with: Option<&keyfile::Passphrase>,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<MoveReport, AuthorityError> {
        let layout = DataDir::new(dir);
        if !layout.database().exists() {
            return Err(AuthorityError::NotInitialised {
                dir: dir.to_path_buf(),
            });
        }
        let policy_path = layout.policy();
        let policy_text = std::fs::read_to_string(&policy_path)
            .map_err(|e| FsError::new("read", &policy_path, e))?;
        Policy::parse(&policy_text, &policy_path)?;
        let source = Store::open(&layout.database()).await?;
        let result = async {
            let generations = source.generations().await?;
            let mut extras = CopyExtras::default();
            for g in &generations {
                if g.key_pem.is_some() {
                    continue;
                }
                let path = layout.resolve(&g.key_file);
                let text =
                    std::fs::read_to_string(&path).map_err(|e| FsError::new("read", &path, e))?;
                let text = if keyfile::is_sealed(&text) {
                    text
                } else {
                    let passphrase = seal_with.ok_or(AuthorityError::UnsealedKeyInDatabase)?;
                    let key_type: KeyType =
                        g.key_type.parse().map_err(|e: String| Fault::Corrupt {
                            what: format!("the key type of CA generation {}: {e}", g.id),
                        })?;
                    let key = pki::load_private_key(&text, key_type)?;
                    keyfile::seal(
                        key.serialized_der(),
                        passphrase,
                        keyfile::DEFAULT_ITERATIONS,
                    )?
                };
                extras.key_pems.insert(g.id, text);
            }
            extras
                .settings
                .push((POLICY_SETTING.to_string(), policy_text.clone()));
            let target = Store::open_config(config, false, Migrations::Apply).await?;
            let copied = copy_all(&source, &target, &extras).await;
            let recorded = match &copied {
                Ok(rows) => {
                    let certificates = rows
                        .iter()
                        .find(|(t, _)| *t == "certificates")
                        .map_or(0, |(_, n)| *n);
                    target
                        .record_audit(&AuditAction::Move.event(
                            actor,
                            now,
                            None,
                            None,
                            format!(
                                "moved from {} with {certificates} certificates and {} generations",
                                layout.database().display(),
                                generations.len()
                            ),
                        ))
                        .await
                }
                Err(_) => Ok(()),
            };
            target.close().await;
            let copied = copied?;
            recorded?;
            // The SQLite copy is not a CA any more: nothing may serve or sign from it.
            source
                .set_setting(
                    MOVED_SETTING,
                    &format!("{} at {}", config.describe(), rfc3339(now)),
                    &AuditAction::Move.event(
                        actor,
                        now,
                        None,
                        None,
                        format!("moved to {}", config.describe()),
                    ),
                )
                .await?;
            Ok(MoveReport {
                database: config.describe(),
                copied: copied
                    .into_iter()
                    .map(|(t, n)| (t.to_string(), n))
                    .collect(),
                generations: generations.len(),
            })
        }
        .await;
        source.close().await;
        result
    }

    /// Records `file` as the policy every server on the shared database signs under (each
    /// server takes it when it next starts; one whose own file differs is refused).
    pub async fn publish_policy(
        config: &StoreConfig,
        file: &Path,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<String, AuthorityError> {
        let text = std::fs::read_to_string(file).map_err(|e| FsError::new("read", file, e))?;
        Policy::parse(&text, file)?;
        let store = Store::open_config(config, false, Migrations::Check).await?;
        let sha = pki::sha256_hex(text.as_bytes());
        let event = AuditAction::PolicyPublish.event(
            actor,
            now,
            None,
            None,
            format!("policy sha256 {sha} from {}", file.display()),
        );
        let result = store.set_setting(POLICY_SETTING, &text, &event).await;
        store.close().await;
        result?;
        Ok(sha)
    }
}
