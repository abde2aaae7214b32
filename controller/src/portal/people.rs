//! Who a person is and what they may do, asked of the API server: TokenReview at sign-in (the
//! controller's own right), then every read and write with a client holding the person's token, and
//! their rights through SelfSubjectAccessReview made as them (which every authenticated user may
//! make), so the portal holds no privileges of its own.

use std::collections::HashMap;

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec},
};
use kube::{Api, Client, Config, api::PostParams, config::AuthInfo};

/// Asks TokenReview who `token` belongs to; `None` if the API server does not accept it.
pub async fn review(client: &Client, token: &str) -> kube::Result<Option<String>> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            // The API server's own audiences: the token a person would use with kubectl.
            audiences: None,
        },
        ..Default::default()
    };
    let answer = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    let status = answer.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Ok(None);
    }
    Ok(Some(
        status.user.and_then(|u| u.username).unwrap_or_default(),
    ))
}

/// A client that authenticates as the holder of `token`: the controller's API server address and CA,
/// nothing of its credentials.
pub fn client_as(base: &Config, token: &str) -> kube::Result<Client> {
    let mut config = base.clone();
    config.auth_info = AuthInfo {
        token: Some(token.to_owned().into()),
        ..Default::default()
    };
    Client::try_from(config)
}

/// One question of a person's rights on a resource (`tollgate.dev`, or the core group's Secrets).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    /// The API group: `tollgate.dev`, or `""` for the core group.
    pub group: &'static str,
    /// The verb (`get`, `create`, `approve`, ...).
    pub verb: &'static str,
    /// The plural resource (`airoutes`, `apisubscriptions`).
    pub resource: &'static str,
    /// The namespace.
    pub namespace: String,
    /// One object's name, or every object.
    pub name: Option<String>,
}

impl Access {
    /// `verb` on `resource` in `namespace`.
    pub fn new(verb: &'static str, resource: &'static str, namespace: &str) -> Self {
        Self {
            group: "tollgate.dev",
            verb,
            resource,
            namespace: namespace.to_owned(),
            name: None,
        }
    }

    /// `verb` on the core group's `resource` (e.g. `secrets`) in `namespace`.
    pub fn core(verb: &'static str, resource: &'static str, namespace: &str) -> Self {
        Self {
            group: "",
            ..Self::new(verb, resource, namespace)
        }
    }

    /// Narrowed to one object.
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }
}

/// A person's answers, asked once per page.
pub struct Rights {
    client: Client,
    answers: HashMap<Access, bool>,
}

impl Rights {
    /// Rights of whoever `client` authenticates as.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            answers: HashMap::new(),
        }
    }

    /// Whether the person may; `false` if the API server cannot be asked.
    pub async fn may(&mut self, access: Access) -> bool {
        if let Some(&answer) = self.answers.get(&access) {
            return answer;
        }
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(access.group.into()),
                    resource: Some(access.resource.into()),
                    verb: Some(access.verb.into()),
                    namespace: Some(access.namespace.clone()),
                    name: access.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = match Api::<SelfSubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
        {
            Ok(r) => r.status.is_some_and(|s| s.allowed),
            Err(error) => {
                tracing::warn!(%error, "SelfSubjectAccessReview failed");
                false
            }
        };
        self.answers.insert(access, answer);
        answer
    }
}
