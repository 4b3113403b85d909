from tribit.cli.main import main

raise SystemExit(main())
