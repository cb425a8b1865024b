def test_x() -> None:
    import systemd
    print(systemd.__file__, getattr(systemd, "__path__", None))
    from systemd import journal
    print(journal.__file__)
