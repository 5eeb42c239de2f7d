// The driver conformance scenario for pgjdbc, run as a single-file program:
//   java -cp postgresql.jar Conformance.java URL USER PASSWORD TABLE PREPARE_THRESHOLD DIRECT_URL
// Prints "ACK k" for every acknowledged write and "NO k" for every write that must not exist;
// tests/clients/conformance.py checks them against the primary. A failed check exits non-zero.
import java.sql.*;
import java.util.Properties;

public class Conformance {
    static String tag;

    static void expect(boolean cond, String what) {
        if (!cond) {
            throw new AssertionError("[" + tag + "] " + what);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = args[0], table = args[3];
        int threshold = Integer.parseInt(args[4]);
        tag = "pgjdbc prepareThreshold=" + threshold;
        int base = 600 + threshold * 20;
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        props.setProperty("prepareThreshold", String.valueOf(threshold));
        try (Connection c = DriverManager.getConnection(url, props)) {
            // Reads on a replica, writes on the primary, through the same statements again and
            // again (server-side prepared once the threshold is reached).
            try (PreparedStatement rd = c.prepareStatement("SELECT pg_is_in_recovery(), ?::int");
                 PreparedStatement wr = c.prepareStatement(
                     "INSERT INTO " + table + "(k) VALUES (?) RETURNING pg_is_in_recovery()")) {
                for (int i = 0; i < 8; i++) {
                    rd.setInt(1, i);
                    try (ResultSet r = rd.executeQuery()) {
                        expect(r.next() && r.getBoolean(1) && r.getInt(2) == i, "read " + i);
                    }
                    wr.setInt(1, base + i);
                    try (ResultSet r = wr.executeQuery()) {
                        expect(r.next() && !r.getBoolean(1), "write on the primary");
                    }
                    System.out.println("ACK " + (base + i));
                }
            }
            // A batch.
            try (PreparedStatement b = c.prepareStatement("INSERT INTO " + table + "(k) VALUES (?)")) {
                for (int k = base + 10; k < base + 13; k++) {
                    b.setInt(1, k);
                    b.addBatch();
                }
                int[] counts = b.executeBatch();
                expect(counts.length == 3, "batch counts");
            }
            for (int k = base + 10; k < base + 13; k++) {
                System.out.println("ACK " + k);
            }
            // A transaction with a savepoint rolled back, and one rolled back whole.
            c.setAutoCommit(false);
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO " + table + "(k) VALUES (?)")) {
                ins.setInt(1, base + 14);
                ins.executeUpdate();
                Savepoint sp = c.setSavepoint();
                ins.setInt(1, base + 15);
                ins.executeUpdate();
                c.rollback(sp);
                c.commit();
                System.out.println("ACK " + (base + 14));
                System.out.println("NO " + (base + 15));
                ins.setInt(1, base + 16);
                ins.executeUpdate();
                c.rollback();
                System.out.println("NO " + (base + 16));
            }
            c.setAutoCommit(true);
            // COPY in and out (pgjdbc's CopyManager).
            org.postgresql.copy.CopyManager copy = c.unwrap(org.postgresql.PGConnection.class).getCopyAPI();
            long copied = copy.copyIn("COPY " + table + "(k) FROM STDIN",
                new java.io.StringReader((base + 17) + "\n" + (base + 18) + "\n"));
            expect(copied == 2, "COPY in");
            System.out.println("ACK " + (base + 17));
            System.out.println("ACK " + (base + 18));
            java.io.StringWriter out = new java.io.StringWriter();
            copy.copyOut("COPY (SELECT 1 UNION ALL SELECT 2) TO STDOUT", out);
            expect(out.toString().equals("1\n2\n"), "COPY out: " + out);
            // LISTEN/NOTIFY.
            try (Statement st = c.createStatement()) {
                st.execute("LISTEN " + table);
                st.execute("NOTIFY " + table + ", 'jdbc'");
            }
            org.postgresql.PGNotification[] notes =
                c.unwrap(org.postgresql.PGConnection.class).getNotifications(3000);
            expect(notes != null && notes.length == 1 && notes[0].getParameter().equals("jdbc"), "notification");
            // A temporary table, then a statement cancelled while it runs.
            try (Statement st = c.createStatement()) {
                st.execute("CREATE TEMP TABLE conf_tmp (v int)");
                st.execute("INSERT INTO conf_tmp VALUES (1), (2)");
                try (ResultSet r = st.executeQuery("SELECT sum(v) FROM conf_tmp")) {
                    expect(r.next() && r.getInt(1) == 3, "temp table");
                }
                Thread canceller = new Thread(() -> {
                    try {
                        Thread.sleep(500);
                        st.cancel();
                    } catch (Exception e) {
                        throw new RuntimeException(e);
                    }
                });
                canceller.start();
                try {
                    st.execute("SELECT pg_sleep(10)");
                    expect(false, "pg_sleep was not cancelled");
                } catch (SQLException e) {
                    expect("57014".equals(e.getSQLState()), "cancel: " + e.getSQLState());
                }
                canceller.join();
                try (ResultSet r = st.executeQuery("SELECT 1")) {
                    expect(r.next() && r.getInt(1) == 1, "session after cancel");
                }
            }
            // set_config with a bind parameter: the session keeps the setting everywhere.
            try (PreparedStatement set = c.prepareStatement("SELECT set_config('app.tenant', ?, false)")) {
                set.setString(1, "j" + threshold);
                set.executeQuery().close();
            }
            try (PreparedStatement get = c.prepareStatement("SELECT current_setting('app.tenant')")) {
                for (int i = 0; i < 6; i++) {
                    try (ResultSet r = get.executeQuery()) {
                        expect(r.next() && r.getString(1).equals("j" + threshold), "set_config followed the session");
                    }
                }
            }
            // SET ROLE is session state too.
            try (Statement st = c.createStatement()) {
                st.execute("SET ROLE conformance_reader");
                for (int i = 0; i < 3; i++) {
                    try (ResultSet r = st.executeQuery("SELECT current_user")) {
                        expect(r.next() && r.getString(1).equals("conformance_reader"), "SET ROLE followed the session");
                    }
                }
                st.execute("RESET ROLE");
            }
        }
        // The server connection killed in the middle of a transaction: the next statement fails,
        // nothing of the transaction is kept, and the client goes on (on a new connection where
        // the driver gave this one up).
        Connection c = DriverManager.getConnection(url, props);
        c.setAutoCommit(false);
        int pid;
        try (PreparedStatement ins = c.prepareStatement(
                "INSERT INTO " + table + "(k) VALUES (?) RETURNING pg_backend_pid()")) {
            ins.setInt(1, base + 30);
            try (ResultSet r = ins.executeQuery()) {
                expect(r.next(), "insert");
                pid = r.getInt(1);
            }
        }
        System.out.println("NO " + (base + 30));
        System.out.println("NO " + (base + 31));
        java.net.URI direct = new java.net.URI(args[5]);
        String[] login = direct.getUserInfo().split(":", 2);
        try (Connection d = DriverManager.getConnection(
                "jdbc:postgresql://" + direct.getHost() + ":" + direct.getPort() + direct.getPath(), login[0], login[1]);
             PreparedStatement kill = d.prepareStatement("SELECT pg_terminate_backend(?)")) {
            kill.setInt(1, pid);
            kill.executeQuery().close();
        }
        Thread.sleep(300);
        try (PreparedStatement ins = c.prepareStatement("INSERT INTO " + table + "(k) VALUES (?)")) {
            ins.setInt(1, base + 31);
            ins.executeUpdate();
            c.commit();
            expect(false, "a transaction whose server connection died committed");
        } catch (SQLException e) {
            // Expected: the transaction is lost.
        }
        try {
            c.rollback();
        } catch (SQLException e) {
            // The driver may have given the connection up.
        }
        if (c.isClosed()) {
            c = DriverManager.getConnection(url, props);
        }
        c.setAutoCommit(true);
        try (PreparedStatement ins = c.prepareStatement("INSERT INTO " + table + "(k) VALUES (?)")) {
            ins.setInt(1, base + 32);
            ins.executeUpdate();
        }
        System.out.println("ACK " + (base + 32));
        c.close();
    }
}
