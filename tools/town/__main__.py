import sys

from tools.town.run import main

sys.exit(main())
