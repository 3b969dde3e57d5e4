//! Issuing on an admin's word: a key made here (`issue`), a CSR (`sign`), and adopting
//! certificates an imported CA signed before.

use super::*;

impl Authority {
    /// The identity a request is issued for: the names it gives, or the node's registered names.
    pub(super) async fn resolve_identity(
        &self,
        node: &NodeName,
        ips: &[IpAddr],
        dns_names: &[DnsName],
    ) -> Result<NodeIdentity, AuthorityError> {
        if ips.is_empty() && dns_names.is_empty() {
            if let Some(registered) = self.store.node(node).await? {
                return Ok(registered);
            }
        }
        Ok(NodeIdentity::new(
            node.clone(),
            ips.to_vec(),
            dns_names.to_vec(),
        ))
    }

    /// Issues a certificate with a key generated here (offline issue on the CA host).
    pub async fn issue_with_new_key(
        &self,
        request: &IssueRequest,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<IssuedWithKey, AuthorityError> {
        reserved(&request.node)?;
        let identity = self
            .resolve_identity(&request.node, &request.ips, &request.dns_names)
            .await?;
        // A profile that carries the node's names is useless without any (a peer certificate
        // without the member's address is refused by every other member).
        let profile = self.policy.profile(&request.profile)?;
        if (profile.include_node_ips || profile.include_node_dns_names)
            && identity.ips.is_empty()
            && identity.dns_names.is_empty()
        {
            return Err(AuthorityError::NodeNamesRequired {
                node: request.node.to_string(),
                profile: request.profile.clone(),
            });
        }
        let grant = self.policy.evaluate(
            &Request {
                profile: &request.profile,
                node: &identity,
                common_name: request.common_name.as_deref(),
                requested_sans: &[],
                lifetime: request.lifetime,
                key_type: request.key_type,
                allow_privileged_common_name: request.allow_privileged_common_name,
            },
            now,
            self.active_generation()?.not_after,
        )?;
        let key = grant.key_type().generate()?;
        let certificate = self
            .sign_and_record(&grant, &identity, &key, Origin::issue(actor), now)
            .await?;
        Ok(IssuedWithKey {
            certificate,
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a CSR for a node on an admin's word (the equivalent of `cfssl sign`): the node's
    /// names are the ones given, or else the CSR's; policy decides everything else.
    #[allow(clippy::too_many_arguments)]
    pub async fn sign_csr(
        &self,
        profile: &str,
        node: &NodeName,
        names: Option<(Vec<IpAddr>, Vec<DnsName>)>,
        csr_pem: &str,
        common_name: Option<&str>,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, AuthorityError> {
        reserved(node)?;
        let csr = VerifiedCsr::from_pem(csr_pem).map_err(|source| AuthorityError::Csr {
            profile: profile.to_string(),
            source,
        })?;
        let (ips, dns) = names.unwrap_or_else(|| {
            let mut ips = Vec::new();
            let mut dns = Vec::new();
            for san in &csr.sans {
                match san {
                    San::Ip(ip) => ips.push(*ip),
                    San::Dns(d) => dns.push(d.clone()),
                }
            }
            (ips, dns)
        });
        let identity = NodeIdentity::new(node.clone(), ips, dns);
        let grant = self.policy.evaluate(
            &Request {
                profile,
                node: &identity,
                common_name: self.token_common_name(profile, common_name),
                requested_sans: &csr.sans,
                lifetime: None,
                key_type: csr.key_type,
                allow_privileged_common_name: false,
            },
            now,
            self.active_generation()?.not_after,
        )?;
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(&csr.public_key).map_err(|e| {
            AuthorityError::Csr {
                profile: profile.to_string(),
                source: PkiError::Csr(e.to_string()),
            }
        })?;
        self.sign_and_record(&grant, &identity, &public_key, Origin::issue(actor), now)
            .await
    }

    /// Records a certificate this CA signed elsewhere (before it was adopted: kubeadm, cfssl) so
    /// it renews like one of ours. It must chain to a CA generation, be unexpired, carry only
    /// DNS and IP names the policy allows, and not be recorded yet.
    pub async fn adopt(
        &self,
        der: &[u8],
        profile: &str,
        node: &NodeName,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, AuthorityError> {
        let refuse = |reason: String| AuthorityError::Import { reason };
        self.policy.profile(profile)?;
        let cert = pki::parse_certificate(der)?;
        if cert.is_ca() {
            return Err(refuse(
                "this is a CA certificate; adopt the leaf certificates it signed".into(),
            ));
        }
        let generation = self
            .issuing_generation(&cert)
            .ok_or_else(|| refuse("the certificate was not issued by this CA".into()))?;
        let not_after = cert.validity().not_after.to_datetime();
        if not_after <= now {
            return Err(refuse(format!(
                "the certificate expired at {}",
                rfc3339(not_after)
            )));
        }
        let serial = pki::serial_hex(&cert);
        if self.store.certificate(&serial, now).await?.is_some() {
            return Err(refuse(format!("certificate {serial} is already recorded")));
        }
        let sans = pki::certificate_sans(&cert)
            .iter()
            .map(|s| San::parse_loose(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| refuse(format!("unsupported name in the certificate: {e}")))?;
        let identity = NodeIdentity::from_sans(node.clone(), &sans);
        self.policy.check_identity(&identity)?;
        let key_type = KeyType::of_spki(cert.public_key())?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string();
        let pem = pki::certificate_pem(der);
        let record = NewCertificate {
            serial: serial.clone(),
            ca_generation: generation.id,
            profile: profile.to_string(),
            node: node.clone(),
            subject: cert.subject().to_string(),
            common_name: common_name.clone(),
            sans: sans.iter().map(|s| s.to_string()).collect(),
            key_type: key_type.to_string(),
            public_key_sha256: pki::sha256_hex(cert.public_key().raw),
            not_before: cert.validity().not_before.to_datetime(),
            not_after,
            pem: pem.clone(),
            issued_at: now,
            renewed_from: None,
        };
        let event = AuditAction::Adopt.event(
            actor,
            now,
            Some(node.to_string()),
            Some(serial.clone()),
            format!("profile {profile}, subject {}", cert.subject()),
        );
        self.store.record_issue(&identity, &record, &event).await?;
        Ok(IssuedCertificate {
            serial,
            profile: profile.to_string(),
            node: node.to_string(),
            common_name,
            sans: record.sans,
            not_before: record.not_before,
            not_after,
            certificate_pem: pem,
        })
    }
}
