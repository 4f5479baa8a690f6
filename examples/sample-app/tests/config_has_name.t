grep -q '^name=sample-app$' app.conf
