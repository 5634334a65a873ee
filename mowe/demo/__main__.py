import sys

from mowe.demo.run import main

sys.exit(main())
