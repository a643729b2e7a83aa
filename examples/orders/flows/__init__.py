"""The shop's own Prefect flows (a package named `flows`, next to pipewarden's `pipewarden.flows`)."""
