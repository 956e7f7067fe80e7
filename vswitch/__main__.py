from vswitch.cli import main

raise SystemExit(main())
