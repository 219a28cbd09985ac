//! Writing each resource of a migration, with the warnings about what of its Kong object it
//! does not carry over.

use super::*;

impl Writer<'_> {
    pub(super) fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }

    /// One warning per field of `other` that is set, not metadata, and not `harmless`. Values
    /// are shown when `show_values`, never for objects that may hold secrets.
    fn unsupported_fields(
        &mut self,
        label: &str,
        other: &BTreeMap<String, Value>,
        harmless: impl Fn(&str, &Value) -> bool,
        show_values: bool,
        why: &str,
    ) {
        for (key, value) in other {
            if METADATA_FIELDS.contains(&key.as_str()) || is_empty(value) || harmless(key, value) {
                continue;
            }
            let shown = if show_values {
                format!("`{key}: {}`", show(value))
            } else {
                format!("`{key}` ({})", count(value))
            };
            self.warn(format!("{label}: {shown} not migrated: {why}"));
        }
    }

    /// [`Self::unsupported_fields`] for settings tollgate has no field for.
    pub(super) fn unsupported(
        &mut self,
        label: &str,
        other: &BTreeMap<String, Value>,
        harmless: impl Fn(&str, &Value) -> bool,
    ) {
        self.unsupported_fields(
            label,
            other,
            harmless,
            false,
            "tollgate has no such setting",
        );
    }

    /// Where a Kong service forwards to, as the sidecar's upstream on 127.0.0.1; `None` when
    /// the service cannot be migrated (said why).
    pub(super) fn upstream(
        &mut self,
        service: &kong::Service,
        label: &str,
    ) -> Option<UpstreamSpec> {
        if service.enabled == Some(false) {
            self.warn(format!(
                "{label}: disabled in Kong: not migrated, nor its routes"
            ));
            return None;
        }
        let mut protocol = service.protocol.clone();
        let mut host = service.host.clone();
        let mut port = service.port;
        let mut path = service.path.clone();
        if let Some(url) = &service.url {
            let (scheme, rest) = url.split_once("://").unwrap_or(("http", url.as_str()));
            let (authority, url_path) = match rest.find('/') {
                Some(slash) => (&rest[..slash], Some(rest[slash..].to_owned())),
                None => (rest, None),
            };
            // Never shown: a user name and password in the URL are a secret.
            let authority = match authority.rsplit_once('@') {
                Some((_, host)) => {
                    self.warn(format!(
                        "{label}: the user name and password in its url not kept: the \
                         sidecar sends none to the application"
                    ));
                    host
                }
                None => authority,
            };
            let (url_host, url_port) = match authority.rsplit_once(':') {
                Some((h, p)) if !h.ends_with(':') && p.bytes().all(|b| b.is_ascii_digit()) => {
                    (h, p.parse().ok())
                }
                _ => (authority, None),
            };
            protocol = Some(scheme.to_ascii_lowercase());
            host = Some(url_host.to_owned());
            port = url_port.or(port);
            path = url_path.or(path);
        }
        let protocol = protocol.unwrap_or_else(|| "http".into());
        let default_port = match protocol.as_str() {
            "http" => 80,
            "https" => 443,
            other => {
                self.warn(format!(
                    "{label}: protocol `{other}`: not migrated, nor its routes: the sidecar \
                     forwards HTTP only"
                ));
                return None;
            }
        };
        let port = port.unwrap_or(default_port);
        let Some(port) = u16::try_from(port).ok().filter(|p| *p > 0) else {
            self.warn(format!(
                "{label}: port {port} is not a TCP port: not migrated, nor its routes"
            ));
            return None;
        };
        if protocol == "https" {
            self.warn(format!(
                "{label}: protocol `https` not kept: the sidecar speaks plain HTTP to \
                 127.0.0.1:{port}, inside the pod"
            ));
        }
        if let Some(host) =
            host.filter(|h| !["localhost", "127.0.0.1", "[::1]", "::1"].contains(&h.as_str()))
        {
            self.warn(format!(
                "{label}: host `{host}` not kept: the sidecar forwards to 127.0.0.1:{port}, \
                 the application in its own pod"
            ));
        }
        let path = match path.as_deref() {
            None | Some("") | Some("/") => None,
            Some(path) => match route_prefix(path, false) {
                Ok(path) => Some(path),
                Err(why) => {
                    self.warn(format!(
                        "{label}: path `{path}` {why}: not migrated, nor its routes"
                    ));
                    return None;
                }
            },
        };
        self.unsupported_fields(
            label,
            &service.other,
            |key, value| match key {
                "retries" => value.as_u64() == Some(5),
                "write_timeout" => value.as_u64() == Some(60_000),
                _ => false,
            },
            true,
            "tollgate has no such setting",
        );
        let timeout = |t: Option<u32>| t.filter(|t| *t != snapshot::DEFAULT_TIMEOUT_MS);
        Some(UpstreamSpec {
            port,
            path,
            connect_timeout: timeout(service.connect_timeout),
            read_timeout: timeout(service.read_timeout),
            drop_underscore_headers: false,
        })
    }

    /// The prefixes of a Kong route tollgate can serve, the others said why.
    fn route_specs(&mut self, route: &RouteAt) -> Vec<RouteSpec> {
        let label = &route.label;
        let strip_path = route.route.strip_path.unwrap_or(true);
        if route.route.paths.is_empty() {
            self.warn(format!(
                "{label}: no paths (Kong matches it by host, method or header alone): not \
                 migrated, tollgate routes by path prefix"
            ));
        }
        let mut specs = Vec::new();
        for path in &route.route.paths {
            match route_prefix(path, self.old_format) {
                Ok(path_prefix) => specs.push(RouteSpec {
                    path_prefix,
                    strip_path,
                }),
                Err(why) => self.warn(format!("{label}: path `{path}` {why}: not migrated")),
            }
        }
        self.unsupported_fields(
            label,
            &route.route.other,
            |key, value| match key {
                // tollgate serves HTTPS, and plain HTTP only behind a TLS-terminating proxy.
                "protocols" => value.as_sequence().is_some_and(|p| {
                    p.iter().any(|v| v.as_str() == Some("https"))
                        && p.iter()
                            .all(|v| matches!(v.as_str(), Some("http" | "https")))
                }),
                "regex_priority" | "priority" => value.as_u64() == Some(0),
                "preserve_host" => value.as_bool() == Some(false),
                // HTTPS only, bodies streamed: these change nothing that reaches the client.
                "https_redirect_status_code" | "request_buffering" | "response_buffering" => true,
                "path_handling" => true,
                _ => false,
            },
            true,
            "tollgate routes by path prefix alone, so the OAuthService serves its paths \
             whatever this says",
        );
        specs
    }

    /// Writes the OAuthService and its provision key Secret; its name, unless none of its
    /// routes could be kept.
    pub(super) fn service(&mut self, planned: &Planned) -> Option<String> {
        let mut specs: Vec<RouteSpec> = Vec::new();
        for route in planned.routes {
            for spec in self.route_specs(route) {
                if let Some(owner) = self.claimed.get(&spec.path_prefix) {
                    self.warn(format!(
                        "{}: path `{}` not migrated: OAuthService `{owner}` already serves it \
                         (tollgate routes by path alone, Kong may have told them apart by host \
                         or method)",
                        route.label, spec.path_prefix
                    ));
                } else if !specs.iter().any(|s| s.path_prefix == spec.path_prefix) {
                    specs.push(spec);
                }
            }
        }
        if specs.is_empty() {
            self.warn(format!(
                "{}: no route path tollgate can serve: no OAuthService written",
                planned.label
            ));
            return None;
        }
        let given = self.service_names.give(planned.wanted);
        let name = given.name;
        if let Some(wanted) = given.wanted {
            self.warn(format!(
                "{}: written as OAuthService `{name}`: `{wanted}` is another's",
                planned.label
            ));
        }
        for spec in &specs {
            self.claimed.insert(spec.path_prefix.clone(), name.clone());
        }
        let secret_name = self
            .secret_names
            .give(&format!("{name}-provision-key"))
            .name;
        let oauth2 = self.oauth2_config(planned.plugin, &secret_name);
        let cors = planned.cors.map(|cors| self.cors(cors, &name));
        let from = format!(
            "{}, with {}",
            planned.label.trim_start_matches("Kong "),
            planned.plugin.label.trim_start_matches("Kong ")
        );
        let service = OAuthService {
            metadata: metadata(&name, self.namespace, &from, planned.tags),
            spec: OAuthServiceSpec {
                pod_selector: None,
                upstream: planned.upstream.clone(),
                routes: specs,
                oauth2,
                cors,
            },
            status: None,
        };
        self.documents.push(Document {
            comment: None,
            object: Object::Service(Box::new(service)),
        });
        let provision_key = planned
            .plugin
            .config
            .provision_key
            .as_deref()
            .filter(|k| !k.is_empty());
        let comment = if provision_key.is_none() {
            self.warn(format!(
                "{}: no config.provision_key (Kong makes one up when it loads the file): put \
                 the key your backend sends in Secret `{secret_name}`, key \
                 `{DEFAULT_PROVISION_KEY_KEY}`; until then OAuthService `{name}` is refused",
                planned.plugin.label
            ));
            self.explained.insert(("OAuthService", name.clone()));
            Some(format!(
                "Kong's file had no provision key: add stringData.{DEFAULT_PROVISION_KEY_KEY}."
            ))
        } else {
            None
        };
        self.documents.push(Document {
            comment,
            object: Object::Secret(Box::new(secret(
                &secret_name,
                self.namespace,
                provision_key.map(|k| (DEFAULT_PROVISION_KEY_KEY, k)),
            ))),
        });
        Some(name)
    }

    /// The plugin's `config`, in tollgate's names, the provision key in `secret_name`.
    fn oauth2_config(&mut self, plugin: &OAuth2At, secret_name: &str) -> OAuth2Config {
        let config = &plugin.config;
        let label = &plugin.label;
        let mut seconds = |field: &str, value: Option<f64>, default: u32| -> u32 {
            match value {
                None => default,
                Some(v) if v >= 0.0 && v <= f64::from(u32::MAX) && v.fract() == 0.0 => v as u32,
                Some(v) => {
                    self.warnings.push(format!(
                        "{label}: config.{field} {v} is not a whole number of seconds: \
                         tollgate's default {default} written instead"
                    ));
                    default
                }
            }
        };
        let token_expiration = seconds(
            "token_expiration",
            config.token_expiration,
            snapshot::DEFAULT_TOKEN_EXPIRATION,
        );
        let refresh_token_ttl = seconds(
            "refresh_token_ttl",
            config.refresh_token_ttl,
            snapshot::DEFAULT_REFRESH_TOKEN_TTL,
        );
        let pkce = match config.pkce.as_deref() {
            None | Some("lax") => Pkce::Lax,
            Some("none") => Pkce::None,
            Some("strict") => Pkce::Strict,
            Some(other) => {
                self.warn(format!(
                    "{label}: config.pkce `{other}` is not none, lax or strict: lax written \
                     instead, Kong's default"
                ));
                Pkce::Lax
            }
        };
        let anonymous = config
            .anonymous
            .as_deref()
            .filter(|a| !a.is_empty())
            .and_then(|a| {
                let found = self
                    .consumers
                    .iter()
                    .position(|c| c.id.as_deref() == Some(a) || c.username.as_deref() == Some(a));
                if found.is_none() {
                    self.warn(format!(
                        "{label}: config.anonymous `{a}` is no consumer of this file: not migrated \
                     (refused requests get 401)"
                    ));
                }
                found.map(|i| self.consumer_refs[i].clone())
            });
        OAuth2Config {
            scopes: (!config.scopes.is_empty()).then(|| config.scopes.clone()),
            mandatory_scope: config.mandatory_scope.unwrap_or(false),
            provision_key_secret_ref: ProvisionKeySecretRef {
                name: secret_name.to_owned(),
                key: DEFAULT_PROVISION_KEY_KEY.to_owned(),
            },
            token_expiration,
            enable_authorization_code: config.enable_authorization_code.unwrap_or(false),
            enable_implicit_grant: config.enable_implicit_grant.unwrap_or(false),
            enable_client_credentials: config.enable_client_credentials.unwrap_or(false),
            enable_password_grant: config.enable_password_grant.unwrap_or(false),
            hide_credentials: config.hide_credentials.unwrap_or(false),
            accept_http_if_already_terminated: config
                .accept_http_if_already_terminated
                .unwrap_or(false),
            anonymous,
            global_credentials: config.global_credentials.unwrap_or(false),
            auth_header_name: config
                .auth_header_name
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| snapshot::DEFAULT_AUTH_HEADER_NAME.to_owned()),
            refresh_token_ttl,
            reuse_refresh_token: config.reuse_refresh_token.unwrap_or(false),
            persistent_refresh_token: config.persistent_refresh_token.unwrap_or(false),
            refresh_token_reuse_grace: 0,
            pkce,
            realm: config.realm.clone().filter(|r| !r.is_empty()),
            issuer: None,
        }
    }

    /// The Consumer name of Kong's consumer `i`: its username, custom_id or id, DNS-safe.
    pub(super) fn consumer_name(&mut self, consumer: &kong::Consumer, i: usize) -> String {
        let wanted = [&consumer.username, &consumer.custom_id, &consumer.id]
            .into_iter()
            .find_map(|n| n.as_deref().and_then(dns_label))
            .unwrap_or_else(|| format!("consumer-{}", i + 1));
        let given = self.consumer_names.give(&wanted);
        if let Some(wanted) = given.wanted {
            self.warn(format!(
                "{}: written as Consumer `{}`: `{wanted}` is another's",
                consumer_label(consumer, i),
                given.name
            ));
        }
        given.name
    }

    pub(super) fn consumer(&mut self, consumer: &kong::Consumer, i: usize) {
        let label = consumer_label(consumer, i);
        let name = self.consumer_refs[i].clone();
        self.unsupported_fields(
            &label,
            &consumer.other,
            |_, _| false,
            false,
            "tollgate issues OAuth 2.0 tokens only",
        );
        if consumer.username.is_none() {
            self.warn(format!(
                "{label}: no username: tollgate sends its name `{name}` as \
                 X-Consumer-Username, where Kong sent none"
            ));
        }
        let resource = Consumer {
            metadata: metadata(
                &name,
                self.namespace,
                label.trim_start_matches("Kong "),
                &[],
            ),
            spec: ConsumerSpec {
                username: consumer.username.clone().filter(|u| !u.is_empty()),
                custom_id: consumer.custom_id.clone(),
                tags: consumer.tags.clone(),
            },
            status: None,
        };
        self.documents.push(Document {
            comment: None,
            object: Object::Consumer(Box::new(resource)),
        });
    }

    /// Writes the OAuthApplication and its Secret; its client id, unless not migrated.
    pub(super) fn application(&mut self, at: &CredentialAt) -> Result<Option<String>, String> {
        let credential = at.credential;
        let label = &at.label;
        let Some(client_id) = credential.client_id.clone().filter(|c| !c.is_empty()) else {
            self.warn(format!(
                "{label}: no client_id (Kong makes one up when it loads the file): not migrated"
            ));
            return Ok(None);
        };
        let client_type = match credential.client_type.as_deref() {
            None | Some("confidential") => ClientType::Confidential,
            Some("public") => ClientType::Public,
            Some(other) => {
                return Err(format!(
                    "{label}: client_type `{other}` is neither confidential nor public"
                ));
            }
        };
        let wanted = [&credential.name, &credential.client_id]
            .into_iter()
            .find_map(|n| n.as_deref().and_then(dns_label))
            .unwrap_or_else(|| format!("application-{}", self.application_names_given + 1));
        self.application_names_given += 1;
        let given = self.application_names.give(&wanted);
        let name = given.name;
        if let Some(wanted) = given.wanted {
            self.warn(format!(
                "{label}: written as OAuthApplication `{name}`: `{wanted}` is another's"
            ));
        }
        self.unsupported(label, &credential.other, |_, _| false);
        let consumer = self.consumer_refs[at.consumer].clone();
        let mut secret_document = None;
        let client_secret_ref = match client_type {
            ClientType::Public => {
                if credential
                    .client_secret
                    .as_deref()
                    .is_some_and(|s| !s.is_empty())
                {
                    self.warn(format!(
                        "{label}: a public client: its client_secret is not migrated (a public \
                         OAuthApplication has none, and authenticates with PKCE)"
                    ));
                }
                None
            }
            ClientType::Confidential => {
                let secret_name = self
                    .secret_names
                    .give(&format!("{name}-client-secret"))
                    .name;
                let value = credential
                    .client_secret
                    .as_deref()
                    .filter(|s| !s.is_empty());
                let comment = match value {
                    Some(hash) if is_hashed_secret(hash) => {
                        self.warn(format!(
                            "{label}: Kong exported only a hash of its client secret \
                             (hash_secret: true), and tollgate hashes the secret itself: put \
                             the client's secret (or a new one, given to the client) in Secret \
                             `{secret_name}`, key `{DEFAULT_CLIENT_SECRET_KEY}`; until then \
                             OAuthApplication `{name}` is refused"
                        ));
                        Some(format!(
                            "Kong kept only a hash of this client secret: add the secret as \
                             stringData.{DEFAULT_CLIENT_SECRET_KEY}."
                        ))
                    }
                    Some(_) => None,
                    None => {
                        self.warn(format!(
                            "{label}: no client_secret (Kong makes one up when it loads the \
                             file): put the client's secret in Secret `{secret_name}`, key \
                             `{DEFAULT_CLIENT_SECRET_KEY}`; until then OAuthApplication \
                             `{name}` is refused"
                        ));
                        Some(format!(
                            "Kong's file had no client secret: add stringData.{DEFAULT_CLIENT_SECRET_KEY}."
                        ))
                    }
                };
                let data = match (&comment, value) {
                    (None, Some(value)) => Some((DEFAULT_CLIENT_SECRET_KEY, value)),
                    _ => None,
                };
                if comment.is_some() {
                    self.explained.insert(("OAuthApplication", name.clone()));
                }
                secret_document = Some(Document {
                    comment,
                    object: Object::Secret(Box::new(secret(&secret_name, self.namespace, data))),
                });
                Some(ClientSecretRef {
                    name: secret_name,
                    key: DEFAULT_CLIENT_SECRET_KEY.to_owned(),
                })
            }
        };
        let application = OAuthApplication {
            metadata: metadata(
                &name,
                self.namespace,
                &format!(
                    "{} of {}",
                    label.trim_start_matches("Kong "),
                    consumer_label(&self.consumers[at.consumer], at.consumer)
                        .trim_start_matches("Kong ")
                ),
                &credential.tags,
            ),
            spec: OAuthApplicationSpec {
                consumer_ref: ConsumerRef { name: consumer },
                name: credential.name.clone().filter(|n| !n.is_empty()),
                client_id: client_id.clone(),
                client_secret_ref,
                redirect_uris: credential.redirect_uris.clone(),
                client_type,
                hash_secret: credential.hash_secret.unwrap_or(false),
                allowed_scopes: None,
                allowed_grants: None,
            },
            status: None,
        };
        self.documents.push(Document {
            comment: None,
            object: Object::Application(Box::new(application)),
        });
        self.documents.extend(secret_document);
        Ok(Some(client_id))
    }

    /// Compiles what was written as a sidecar would, and reports what it would still refuse,
    /// but for what was already explained (a secret Kong did not export).
    pub(super) fn check(&mut self) {
        let resources = Migration {
            documents: std::mem::take(&mut self.documents),
            warnings: Vec::new(),
            tokens: Vec::new(),
        };
        let compiled = tollgate_api::compile(&resources.resources());
        self.documents = resources.documents;
        for error in compiled.errors {
            let explained = matches!(error.reason, Reason::SecretKeyNotFound)
                && self.explained.contains(&(error.kind, error.name.clone()));
            if !explained {
                self.warn(format!("tollgate would refuse {error}"));
            }
        }
    }
}
