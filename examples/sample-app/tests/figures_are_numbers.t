grep -Eq '^startup_ms=[0-9]+$' app.conf && grep -Eq '^throughput_ops=[0-9]+$' app.conf
