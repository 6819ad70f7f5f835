"""The worker role's process managers and periodic jobs: the provisioning saga, billing, the
force-release policy, the reconciler, hold expiry and the rate-limit cleanup. They run here,
beside the handlers they drive; ``gateways/processes.py`` only schedules them."""
