"""Configuration, declared once and read once.

``settings`` declares every ``supervisor:`` setting (name, type, default, help,
check); ``load`` reads KissBot's config file and the command line into a frozen
``Config``; ``yamlparse`` parses YAML in a short-lived isolated child;
``specs`` turns a ``Config`` into the core's process specs and policy;
``paths`` says where runtime files live; ``docgen`` writes
docs/configuration.md.
"""
