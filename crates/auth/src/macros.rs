//! Setters shared by the builders of the method layers.

/// Adds the layer-level setters (rules, identity headers, credential
/// stripping) to a method builder that builds a layer; they land in its
/// `layer: LayerOptions` field.
macro_rules! layer_options {
    ($builder:ty) => {
        impl $builder {
            /// Requires `rule` to hold once the caller is authenticated
            /// (see [`Rule`](crate::Rule)); a refusal is a `403`. May be
            /// given several times: all must hold.
            pub fn require(mut self, rule: impl crate::Authorize) -> Self {
                self.layer.rules.push(::std::sync::Arc::new(rule));
                self
            }

            /// Sends the identity field `field` upstream as `header`:
            /// `sub`, `consumer`, `iss`, `scope`, `method`, or a claim by
            /// dotted path (`org.id`). Incoming copies of `header` are
            /// always removed first, so a client cannot spoof it.
            pub fn identity_header(
                mut self,
                field: impl Into<String>,
                header: ::http::HeaderName,
            ) -> Self {
                self.layer.identity_headers.push((field.into(), header));
                self
            }

            /// Whether the checked credential is removed before the request
            /// goes upstream too (those nobody checked always are). Default
            /// false.
            pub fn strip_credentials(mut self, yes: bool) -> Self {
                self.layer.strip_credentials = yes;
                self
            }
        }
    };
}

pub(crate) use layer_options;
