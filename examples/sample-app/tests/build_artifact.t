test -f build/app.env && grep -q '^version=' build/app.env
