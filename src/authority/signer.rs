//! Signing: the signer of each generation (its key, opened with the passphrase and checked
//! against its certificate), certificate parameters from a grant, and recording what was
//! signed before it is handed out.

use super::*;

/// The signing half of a generation, loaded on first use.
pub(super) struct Signer {
    pub(super) generation: i64,
    pub(super) issuer: Issuer<'static, KeyPair>,
    /// The CA's subject key identifier; leaves and CRLs name it as their authority key id.
    pub(super) key_id: Option<Vec<u8>>,
}

/// A signed certificate, not yet recorded (and so not yet handed out).
pub(super) struct Signed {
    pub(super) record: IssueRecord,
    pub(super) issued: IssuedCertificate,
}

/// Why a certificate is being signed, for the record and the audit trail.
#[derive(Clone)]
pub(super) struct Origin<'a> {
    pub(super) action: AuditAction,
    pub(super) actor: &'a str,
    pub(super) renewed_from: Option<String>,
}

impl<'a> Origin<'a> {
    pub(super) fn issue(actor: &'a str) -> Self {
        Self {
            action: AuditAction::Issue,
            actor,
            renewed_from: None,
        }
    }
}

// The only calls into rcgen's signing: every certificate and CRL etcd-ca makes is signed here.

/// Signs `params` for `subject_key` with `issuer`; returns the certificate's DER.
pub(super) fn sign_certificate(
    params: &CertificateParams,
    subject_key: &impl PublicKeyData,
    issuer: &Issuer<'_, impl rcgen::SigningKey>,
    what: &'static str,
) -> Result<Vec<u8>, AuthorityError> {
    params
        .signed_by(subject_key, issuer)
        .map(|cert| cert.der().to_vec())
        .map_err(|source| Fault::Sign { what, source }.into())
}

/// Signs `params` with their own subject key (a new root); returns the certificate's DER.
pub(super) fn self_sign(
    params: &CertificateParams,
    key: &KeyPair,
) -> Result<Vec<u8>, AuthorityError> {
    params
        .self_signed(key)
        .map(|cert| cert.der().to_vec())
        .map_err(|source| {
            Fault::Sign {
                what: "a CA certificate",
                source,
            }
            .into()
        })
}

/// Signs a CRL with `issuer`; returns its DER.
pub(super) fn sign_crl(
    params: &rcgen::CertificateRevocationListParams,
    issuer: &Issuer<'_, impl rcgen::SigningKey>,
) -> Result<Vec<u8>, AuthorityError> {
    params
        .signed_by(issuer)
        .map(|crl| crl.der().to_vec())
        .map_err(|source| {
            Fault::Sign {
                what: "a CRL",
                source,
            }
            .into()
        })
}

/// The SubjectPublicKeyInfo (DER) of a certificate and its key type.
pub(super) fn public_key_of(der: &[u8]) -> Result<(Vec<u8>, KeyType), AuthorityError> {
    let cert = pki::parse_certificate(der)?;
    let key_type = KeyType::of_spki(cert.public_key())?;
    Ok((cert.public_key().raw.to_vec(), key_type))
}

/// Certificate parameters from a grant: everything comes from policy, nothing from rcgen's
/// defaults (its validity runs to 4096 and its serial is derived from the key).
pub(super) fn certificate_params(
    grant: &Grant,
    serial: &[u8],
    issuer_has_key_id: bool,
) -> Result<CertificateParams, AuthorityError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, grant.common_name());
    params.distinguished_name = dn;
    params.serial_number = Some(SerialNumber::from_slice(serial));
    params.not_before = grant.not_before();
    params.not_after = grant.not_after();
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = issuer_has_key_id;
    params.subject_alt_names = grant
        .sans()
        .iter()
        .map(|san| match san {
            San::Dns(name) => name
                .as_str()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|source| Fault::Sign {
                    what: "a DNS name",
                    source,
                }),
            San::Ip(ip) => Ok(SanType::IpAddress(*ip)),
        })
        .collect::<Result<_, _>>()?;
    params.key_usages = grant
        .key_usages()
        .iter()
        .map(|k| match k {
            KeyUsage::DigitalSignature => KeyUsagePurpose::DigitalSignature,
            KeyUsage::KeyEncipherment => KeyUsagePurpose::KeyEncipherment,
            KeyUsage::KeyAgreement => KeyUsagePurpose::KeyAgreement,
        })
        .collect();
    params.extended_key_usages = grant
        .extended_key_usages()
        .iter()
        .map(|e| match e {
            ExtendedKeyUsage::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsage::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
        })
        .collect();
    Ok(params)
}

impl Authority {
    /// The active generation's signer.
    pub(super) fn signer(&self) -> Result<Arc<Signer>, AuthorityError> {
        let id = self.current().active()?.id;
        self.generation_signer(id)
    }

    /// Opens the key of every trusted generation (permissions, passphrase, and that it belongs
    /// to its certificate).
    pub fn check_keys(&self) -> Result<(), AuthorityError> {
        for id in self.current().signers.keys() {
            self.generation_signer(*id)?;
        }
        Ok(())
    }

    /// The signer of a trusted (not retired) generation, its key loaded on first use.
    pub(super) fn generation_signer(&self, id: i64) -> Result<Arc<Signer>, AuthorityError> {
        let generations = self.current();
        let unknown = || AuthorityError::UnknownGeneration {
            issuer: CrlIssuer::Generation(id),
        };
        let slot = generations.signers.get(&id).ok_or_else(unknown)?;
        if let Some(signer) = slot.get() {
            return Ok(signer.clone());
        }
        let record = generations
            .records
            .iter()
            .find(|g| g.id == id)
            .ok_or_else(unknown)?;
        let signer = self.load_signer(record)?;
        // Another thread may have won the race; either signer is the same generation.
        Ok(slot.get_or_init(|| Arc::new(signer)).clone())
    }

    /// A generation's sealed key text and where it came from: the database when it holds the
    /// key, else the key file (refused when others can read it).
    pub(super) fn generation_key_text(
        &self,
        generation: &GenerationRecord,
    ) -> Result<(String, PathBuf), AuthorityError> {
        if let Some(text) = &generation.key_pem {
            let from = PathBuf::from(format!("(the database: generation {})", generation.id));
            return Ok((text.clone(), from));
        }
        let key_path = self.dir.resolve(&generation.key_file);
        let metadata =
            std::fs::metadata(&key_path).map_err(|e| FsError::new("read", &key_path, e))?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Fault::KeyFilePermissions {
                path: key_path,
                mode,
            }
            .into());
        }
        let key_text =
            std::fs::read_to_string(&key_path).map_err(|e| FsError::new("read", &key_path, e))?;
        Ok((key_text, key_path))
    }

    /// Reads a generation's key: opened with the passphrase, and checked against the
    /// generation's certificate.
    pub(super) fn load_signer(
        &self,
        generation: &GenerationRecord,
    ) -> Result<Signer, AuthorityError> {
        let (key_text, key_path) = self.generation_key_text(generation)?;
        let key_pem = keyfile::open(&key_text, self.passphrase.as_ref())?;
        let key_type: KeyType =
            generation
                .key_type
                .parse()
                .map_err(|e: String| Fault::Corrupt {
                    what: format!("the key type of CA generation {}: {e}", generation.id),
                })?;
        let key = pki::load_private_key(&key_pem, key_type)?;
        let der = generation.cert_der().unwrap_or_default();
        let cert = pki::parse_certificate(&der)?;
        if !pki::key_matches_certificate(&key, &cert) {
            return Err(Fault::KeyMismatch {
                path: key_path,
                generation: generation.id,
            }
            .into());
        }
        let (issuer, key_id) = ca::issuer(&cert, key)?;
        Ok(Signer {
            generation: generation.id,
            issuer,
            key_id,
        })
    }

    /// Signs what the grant says for `public_key`. Nothing is handed out until it is recorded.
    pub(super) fn sign(
        &self,
        grant: &Grant,
        public_key: &impl PublicKeyData,
        now: OffsetDateTime,
        renewed_from: Option<String>,
    ) -> Result<(NewCertificate, IssuedCertificate), AuthorityError> {
        self.check_policy_current()?;
        let signer = self.signer()?;
        let serial = ca::ordered_serial(now)?;
        let params = certificate_params(grant, &serial, signer.key_id.is_some())?;
        let der = sign_certificate(&params, public_key, &signer.issuer, "a certificate")?;
        let pem = pki::certificate_pem(&der);
        let serial_hex = hex::encode(serial);
        let sans: Vec<String> = grant.sans().iter().map(|s| s.to_string()).collect();
        let record = NewCertificate {
            serial: serial_hex.clone(),
            ca_generation: signer.generation,
            profile: grant.profile().to_string(),
            node: grant.node().clone(),
            subject: format!("CN={}", grant.common_name()),
            common_name: grant.common_name().to_string(),
            sans: sans.clone(),
            key_type: grant.key_type().to_string(),
            public_key_sha256: pki::sha256_hex(&public_key.subject_public_key_info()),
            not_before: grant.not_before(),
            not_after: grant.not_after(),
            pem: pem.clone(),
            issued_at: now,
            renewed_from,
        };
        let issued = IssuedCertificate {
            serial: serial_hex,
            profile: record.profile.clone(),
            node: grant.node().to_string(),
            common_name: record.common_name.clone(),
            sans,
            not_before: grant.not_before(),
            not_after: grant.not_after(),
            certificate_pem: pem,
        };
        Ok((record, issued))
    }

    /// Signs, records with its audit event, and only then returns the certificate.
    pub(super) async fn sign_and_record(
        &self,
        grant: &Grant,
        identity: &NodeIdentity,
        public_key: &impl PublicKeyData,
        origin: Origin<'_>,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, AuthorityError> {
        // Serials are 126 random bits and the primary key: a collision is refused by the
        // database, and signed again with a new serial.
        let mut attempts = 0;
        loop {
            let signed = self.sign_for_record(grant, identity, public_key, origin.clone(), now)?;
            match self.record_one(signed).await {
                Err(AuthorityError::Fault(Fault::Store(StoreError::SerialTaken(e))))
                    if attempts < 2 =>
                {
                    attempts += 1;
                    tracing::warn!(error = %e, "serial collision; signing again with a new serial");
                }
                other => return other,
            }
        }
    }

    /// Signs and prepares the record and audit event; nothing is handed out before
    /// [`Authority::record`] made it durable.
    pub(super) fn sign_for_record(
        &self,
        grant: &Grant,
        identity: &NodeIdentity,
        public_key: &impl PublicKeyData,
        origin: Origin<'_>,
        now: OffsetDateTime,
    ) -> Result<Signed, AuthorityError> {
        let Origin {
            action,
            actor,
            renewed_from,
        } = origin;
        let (cert, issued) = self.sign(grant, public_key, now, renewed_from)?;
        let event = action.event(
            actor,
            now,
            Some(issued.node.clone()),
            Some(issued.serial.clone()),
            format!("profile {}, CN {}", issued.profile, issued.common_name),
        );
        Ok(Signed {
            record: IssueRecord {
                node: identity.clone(),
                cert,
                event,
            },
            issued,
        })
    }

    /// Records one signed certificate; returns it once durable.
    pub(super) async fn record_one(
        &self,
        signed: Signed,
    ) -> Result<IssuedCertificate, AuthorityError> {
        let issued = signed.issued.clone();
        self.record(vec![signed]).await?;
        Ok(issued)
    }

    /// Records signed certificates, all or none, in one group commit; returns them once durable.
    pub(super) async fn record(
        &self,
        signed: Vec<Signed>,
    ) -> Result<Vec<IssuedCertificate>, AuthorityError> {
        let (records, issued): (Vec<_>, Vec<_>) =
            signed.into_iter().map(|s| (s.record, s.issued)).unzip();
        let actions: Vec<String> = records.iter().map(|r| r.event.action.clone()).collect();
        self.store.record_issues(records).await?;
        for (issued, action) in issued.iter().zip(actions) {
            tracing::info!(action, serial = %issued.serial, profile = %issued.profile, node = %issued.node, not_after = %rfc3339(issued.not_after), "issued certificate");
        }
        Ok(issued)
    }
}

#[cfg(test)]
mod tests {
    /// Only this module signs: no other non-test code in `src/` calls rcgen's signing.
    #[test]
    fn nothing_outside_the_signer_calls_rcgen_signing() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut offenders = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.ends_with("authority/signer.rs") || path.extension() != Some("rs".as_ref())
                {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap();
                for call in [".signed_by(", ".self_signed("] {
                    if code.contains(call) {
                        offenders.push(format!("{} calls {call}", path.display()));
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "{offenders:?}");
        assert!(
            root.join("authority/signer.rs").exists(),
            "the walk looked in the wrong place"
        );
    }

    #[test]
    fn the_server_node_name_is_valid() {
        assert!(super::SERVER_NODE.parse::<crate::names::NodeName>().is_ok());
    }
}
