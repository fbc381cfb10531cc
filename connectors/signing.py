"""The secret a sender signs its webhooks with, kept as a connection so it is encrypted at
rest, never exported and never shown again. Two slots: during a rotation both are accepted."""
from __future__ import annotations

from .base import Action, CredentialType, Field

CREDENTIALS = (
    CredentialType(
        key="signing_secret", label="Webhook signing secret",
        description="The secret a sender (GitHub, Stripe, Shopify, Slack…) signs its webhooks with.",
        fields=(
            Field("secret", "Secret", required=True, secret=True, template=False,
                  help="As the sender shows it (e.g. Stripe's whsec_…); for basic auth, the password."),
            Field("previous_secret", "Previous secret", secret=True, template=False,
                  help="While rotating: the old secret, still accepted until you clear it."),
        ),
    ),
)
ACTIONS: tuple[Action, ...] = ()
