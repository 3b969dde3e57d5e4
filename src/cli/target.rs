//! Where an admin command runs: on the CA host's data dir ([`Target::Local`]) or through a
//! running server ([`Target::Remote`]), behind one set of methods that take and return the wire
//! types. Locally the same operations the API runs ([`crate::api::ops`]) do the work, so both
//! ways read a request the same way and answer the same.

use super::*;
use crate::api::error::ApiError;
use crate::client::ApiClient;
use crate::wire::{
    AdminTokenInfo, AdminTokenRevoked, AuditEntry, CertificateInfo, CertsQuery, IssueBody,
    IssueResponse, RevokeBody, RotateBody, RotationStatus, TidyAnswer, TidyBody, TokenBody,
    TokenResponse,
};

pub(super) enum Target {
    Local(Box<Authority>),
    Remote(ApiClient),
}

impl From<ApiError> for CliError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Authority(e) => CliError::Authority(e),
            other => CliError::Failed(other.to_string()),
        }
    }
}

impl Target {
    /// The running server when `--server` was given (with an admin token), else the data dir.
    pub(super) async fn admin(
        data_dir: &DataDirArg,
        remote: &RemoteArgs,
    ) -> Result<Self, CliError> {
        Ok(match remote.admin_client()? {
            Some(client) => Target::Remote(client),
            None => Target::Local(Box::new(data_dir.open().await?)),
        })
    }

    /// Runs `op` against the target, then closes it whatever the outcome.
    pub(super) async fn run<T>(
        self,
        op: impl AsyncFnOnce(&Target) -> Result<T, CliError>,
    ) -> Result<T, CliError> {
        let result = op(&self).await;
        self.close().await;
        result
    }

    /// Closes the data dir (nothing to do for a server).
    pub(super) async fn close(self) {
        if let Target::Local(authority) = self {
            authority.close().await;
        }
    }

    pub(super) async fn create_token(
        &self,
        body: TokenBody,
        now: OffsetDateTime,
    ) -> Result<TokenResponse, CliError> {
        Ok(match self {
            Target::Local(a) => crate::api::ops::create_token(a, body, &local_actor(), now).await?,
            Target::Remote(c) => c.create_token(&body).await?,
        })
    }

    /// Every certificate the query matches, following the pages.
    pub(super) async fn certificates(
        &self,
        mut query: CertsQuery,
        now: OffsetDateTime,
    ) -> Result<Vec<CertificateInfo>, CliError> {
        let mut all = Vec::new();
        loop {
            let page = match self {
                Target::Local(a) => crate::api::ops::certificates(a, query.clone(), now).await?,
                Target::Remote(c) => c.certificates(&query).await?,
            };
            all.extend(page.certificates);
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// One certificate; `serial` is normalised hex.
    pub(super) async fn certificate(
        &self,
        serial: &str,
        now: OffsetDateTime,
    ) -> Result<CertificateInfo, CliError> {
        Ok(match self {
            Target::Local(a) => crate::api::ops::certificate(a, serial, now).await?,
            Target::Remote(c) => c.certificate(serial).await?,
        })
    }

    pub(super) async fn revoke(
        &self,
        serial: &str,
        body: RevokeBody,
        now: OffsetDateTime,
    ) -> Result<CertificateInfo, CliError> {
        Ok(match self {
            Target::Local(a) => {
                crate::api::ops::revoke(a, serial, body, &local_actor(), now).await?
            }
            Target::Remote(c) => c.revoke(serial, &body).await?,
        })
    }

    pub(super) async fn issue(
        &self,
        body: IssueBody,
        now: OffsetDateTime,
    ) -> Result<IssueResponse, CliError> {
        Ok(match self {
            Target::Local(a) => crate::api::ops::issue(a, body, &local_actor(), now).await?,
            Target::Remote(c) => c.issue(&body).await?,
        })
    }

    pub(super) async fn audit(&self, limit: i64) -> Result<Vec<AuditEntry>, CliError> {
        Ok(match self {
            Target::Local(a) => crate::api::ops::audit(a, Some(limit)).await?,
            Target::Remote(c) => c.audit(limit).await?,
        })
    }

    pub(super) async fn revoke_admin_token(
        &self,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<AdminTokenRevoked, CliError> {
        Ok(match self {
            Target::Local(a) => {
                crate::api::ops::revoke_admin_token(a, id, &local_actor(), now).await?
            }
            Target::Remote(c) => c.revoke_admin_token(id).await?,
        })
    }

    pub(super) async fn tidy(
        &self,
        body: TidyBody,
        now: OffsetDateTime,
    ) -> Result<TidyAnswer, CliError> {
        Ok(match self {
            Target::Local(a) => crate::api::ops::tidy(a, body, &local_actor(), now).await?,
            Target::Remote(c) => c.tidy(&body).await?,
        })
    }

    pub(super) async fn admin_tokens(&self) -> Result<Vec<AdminTokenInfo>, CliError> {
        Ok(match self {
            Target::Local(a) => crate::api::ops::admin_tokens(a).await?,
            Target::Remote(c) => c.admin_tokens().await?,
        })
    }

    pub(super) async fn fleet(&self, now: OffsetDateTime) -> Result<crate::wire::Fleet, CliError> {
        Ok(match self {
            Target::Local(a) => crate::api::ops::fleet(a, now).await?,
            Target::Remote(c) => c.fleet().await?,
        })
    }

    /// The trust bundle (PEM): every CA generation trusted now.
    pub(super) async fn trust_bundle(&self) -> Result<String, CliError> {
        Ok(match self {
            Target::Local(a) => a.trust_bundle_pem(),
            Target::Remote(c) => c.trust_bundle().await?,
        })
    }

    /// etcd's CRL (DER) as the server serves it.
    pub(super) async fn crl(&self, now: OffsetDateTime) -> Result<Vec<u8>, CliError> {
        Ok(match self {
            Target::Local(a) => a.current_crl(now).await?.to_vec(),
            Target::Remote(c) => c.crl(None).await?,
        })
    }

    pub(super) async fn rotation_status(
        &self,
        now: OffsetDateTime,
    ) -> Result<RotationStatus, CliError> {
        Ok(match self {
            Target::Local(a) => crate::api::ops::rotation_status(a, now).await?,
            Target::Remote(c) => c.rotation_status().await?,
        })
    }

    /// A rotation step (`start`, `activate`, `finish`, `abort`), then where the rotation stands.
    pub(super) async fn rotate(
        &self,
        step: &str,
        body: RotateBody,
        now: OffsetDateTime,
    ) -> Result<RotationStatus, CliError> {
        Ok(match self {
            Target::Local(a) => crate::api::ops::rotate(a, step, body, &local_actor(), now)
                .await?
                .ok_or_else(|| CliError::Usage(format!("no rotation step {step:?}")))?,
            Target::Remote(c) => c.rotate(step, &body).await?,
        })
    }

    /// A consistent backup written to `out` (0600): taken here, or by the server and downloaded.
    pub(super) async fn backup(
        &self,
        out: &Path,
        now: OffsetDateTime,
    ) -> Result<crate::authority::BackupReport, CliError> {
        match self {
            Target::Local(a) => Ok(a.backup(out, &local_actor(), now).await?),
            Target::Remote(c) => super::ca::remote_backup(c, out).await,
        }
    }
}
