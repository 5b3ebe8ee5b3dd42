from entropy_sentinel.cli import main

raise SystemExit(main())
