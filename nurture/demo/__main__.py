from nurture.demo.run import main

raise SystemExit(main())
