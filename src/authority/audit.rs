//! The audit trail and the certificate records: listing, revoking, refusals and summaries.

use super::*;

/// What an audit event records: each action etcd-ca audits, spelled once (refusals are the
/// refused request's name and `.refused`; summaries name themselves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditAction {
    Issue,
    Renew,
    Enroll,
    Adopt,
    Revoke,
    TokenCreate,
    AdminTokenCreate,
    AdminTokenRevoke,
    Backup,
    CaInit,
    CaImport,
    RotateStart,
    RotateActivate,
    RotateFinish,
    RotateAbort,
    Tidy,
    Restore,
    Move,
    PolicyPublish,
}

impl AuditAction {
    /// The action as the audit trail stores and prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issue => "issue",
            Self::Renew => "renew",
            Self::Enroll => "enroll",
            Self::Adopt => "adopt",
            Self::Revoke => "revoke",
            Self::TokenCreate => "token.create",
            Self::AdminTokenCreate => "admin-token.create",
            Self::AdminTokenRevoke => "admin-token.revoke",
            Self::Backup => "backup",
            Self::CaInit => "ca.init",
            Self::CaImport => "ca.import",
            Self::RotateStart => "ca.rotate.start",
            Self::RotateActivate => "ca.rotate.activate",
            Self::RotateFinish => "ca.rotate.finish",
            Self::RotateAbort => "ca.rotate.abort",
            Self::Tidy => "tidy",
            Self::Restore => "restore",
            Self::Move => "move",
            Self::PolicyPublish => "policy.publish",
        }
    }

    /// An event of this action by `actor` at `at`.
    pub fn event(
        self,
        actor: &str,
        at: OffsetDateTime,
        node: Option<String>,
        serial: Option<String>,
        detail: String,
    ) -> AuditEvent {
        AuditEvent {
            at,
            actor: actor.to_string(),
            action: self.as_str().to_string(),
            node,
            serial,
            detail,
        }
    }
}

impl Authority {
    /// Records a summary line (of refusals not audited one by one) in the audit trail.
    pub async fn audit_summary(&self, action: &str, detail: &str, now: OffsetDateTime) {
        let event = AuditEvent {
            at: now,
            actor: "etcd-ca serve".to_string(),
            action: action.to_string(),
            node: None,
            serial: None,
            detail: detail.to_string(),
        };
        if let Err(e) = self.store.record_audit(&event).await {
            tracing::warn!(error = %e, "cannot record a summary in the audit trail");
        }
    }

    /// Records a refused request in the audit trail.
    pub async fn audit_refusal(
        &self,
        action: &str,
        actor: &str,
        error: &AuthorityError,
        now: OffsetDateTime,
    ) {
        let (node, serial) = error.subject();
        let event = AuditEvent {
            at: now,
            actor: actor.to_string(),
            action: format!("{action}.refused"),
            node: node.map(str::to_string),
            serial: serial.map(str::to_string),
            detail: error.to_string(),
        };
        if let Err(e) = self.store.record_audit(&event).await {
            tracing::warn!(error = %e, "cannot record a refusal in the audit trail");
        }
    }

    /// Each node and profile's current certificate that has not expired yet.
    pub async fn current_certificates(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<crate::store::CurrentCertificate>, AuthorityError> {
        Ok(self.store.current_certificates(now).await?)
    }

    /// What every agent last reported, as the fleet reads it.
    pub async fn fleet_reports(&self) -> Result<Vec<crate::store::FleetReport>, AuthorityError> {
        Ok(self.store.fleet_reports().await?)
    }

    /// The dates and revocation of the recorded certificates among these serials (those not
    /// recorded, or removed by retention, are absent), read in batches.
    pub async fn certificate_dates(
        &self,
        serials: &[String],
    ) -> Result<Vec<crate::store::CertificateDates>, AuthorityError> {
        let mut found = Vec::with_capacity(serials.len());
        for batch in serials.chunks(500) {
            found.extend(self.store.certificate_dates(batch).await?);
        }
        Ok(found)
    }

    /// For each profile, when the first of its current certificates expires.
    pub async fn soonest_expiry_by_profile(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<(String, OffsetDateTime)>, AuthorityError> {
        Ok(self.store.soonest_expiry_by_profile(now).await?)
    }

    pub async fn certificates(
        &self,
        filter: &CertificateFilter,
        now: OffsetDateTime,
    ) -> Result<Vec<CertificateRecord>, AuthorityError> {
        Ok(self.store.certificates(filter, now).await?)
    }

    pub async fn certificate(
        &self,
        serial: &str,
        now: OffsetDateTime,
    ) -> Result<CertificateRecord, AuthorityError> {
        let serial = normalize_serial(serial)?;
        self.store
            .certificate(&serial, now)
            .await?
            .ok_or(AuthorityError::UnknownSerial { serial })
    }

    pub async fn revoke(
        &self,
        serial: &str,
        reason: RevocationReason,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<CertificateRecord, AuthorityError> {
        let serial = normalize_serial(serial)?;
        // The audit trail names the node whose certificate this is.
        let node = self
            .store
            .certificate(&serial, now)
            .await?
            .map(|record| record.node);
        let event = AuditAction::Revoke.event(
            actor,
            now,
            node,
            Some(serial.clone()),
            format!("reason {}", reason.name()),
        );
        match self.store.revoke(&serial, reason.name(), &event).await? {
            RevokeOutcome::Revoked(record) => {
                tracing::info!(serial = %serial, reason = reason.name(), "revoked certificate");
                self.crl_cache.forget_revocations();
                self.changed.notify_one();
                Ok(*record)
            }
            RevokeOutcome::AlreadyRevoked(record) => Err(AuthorityError::AlreadyRevoked {
                serial,
                revoked_at: record.revoked_at.unwrap_or(now),
            }),
            RevokeOutcome::NotFound => Err(AuthorityError::UnknownSerial { serial }),
        }
    }

    pub async fn audit_events(&self, limit: i64) -> Result<Vec<AuditEvent>, AuthorityError> {
        Ok(self.store.audit_events(limit).await?)
    }
}
