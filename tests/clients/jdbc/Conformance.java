// The driver conformance scenario for pgjdbc, run as a single-file program:
//   java -cp postgresql.jar Conformance.java URL USER PASSWORD TABLE PREPARE_THRESHOLD
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
        }
    }
}
