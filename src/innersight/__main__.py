from innersight.cli import main

raise SystemExit(main())
