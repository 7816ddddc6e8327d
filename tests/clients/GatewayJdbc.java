import java.sql.*;
/*
 * GatewayJdbc: pgJDBC through rvbbit-gateway (tests/t/021_gateway_jdbc.pl).
 * Runs a literal RVBBIT statement three times as a PreparedStatement with
 * prepareThreshold=1 (named server-side statements) and a fetch size of 1
 * (portal suspension), printing the column names, types and rows.
 * Usage: java GatewayJdbc PORT PASSWORD
 */
public class GatewayJdbc {
  public static void main(String[] a) throws Exception {
    Connection c = DriverManager.getConnection("jdbc:postgresql://127.0.0.1:" + a[0] + "/postgres?prepareThreshold=1", "alice", a[1]);
    c.setAutoCommit(false);
    for (int i = 0; i < 3; i++) {
      PreparedStatement ps = c.prepareStatement("RVBBIT MAP PARALLEL 5 'extract_brand' AS (brand text) USING (SELECT * FROM (VALUES ('Apple iPhone 15'), ('Samsung Galaxy S24'), ('Sony WH-1000XM5')) AS t(product_name))");
      ps.setFetchSize(1);
      ResultSet rs = ps.executeQuery();
      ResultSetMetaData md = rs.getMetaData();
      StringBuilder sb = new StringBuilder();
      for (int k = 1; k <= md.getColumnCount(); k++) sb.append(md.getColumnName(k)).append(":").append(md.getColumnTypeName(k)).append(" ");
      while (rs.next()) sb.append(rs.getString(1)).append("=").append(rs.getString(2)).append("; ");
      System.out.println("run " + i + ": " + sb);
      rs.close(); ps.close();
    }
    c.commit(); c.close();
  }
}
