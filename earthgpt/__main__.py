from earthgpt.cli import main

raise SystemExit(main())
